# fraudstream developer targets. `make test` is the test command CI runs.
CARGO ?= cargo

.PHONY: test check fmt lint bench bench-forest quickstart sample clean

## Run every test (unit, integration, CLI, property tests).
test:
	$(CARGO) test --workspace --all-targets --locked

## Formatting and lints, as CI enforces them.
check: fmt lint

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Criterion benches (generated data) and the full-data comparison.
bench:
	$(CARGO) bench --bench forest

bench-forest:
	scripts/bench-forest.sh

## The README quickstart: train on the shipped sample, then score it.
quickstart:
	$(CARGO) run --release -- train --input data/creditcard-sample.csv --out out/model.fsm
	$(CARGO) run --release -- score --model out/model.fsm --input data/creditcard-sample.csv --out out/verdicts.csv

## Rebuild the shipped sample from the full dataset.
sample:
	scripts/make-sample.py

clean:
	$(CARGO) clean
	rm -rf out .cache
