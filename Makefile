# fraudstream developer targets. `make test` is the test command CI runs.
CARGO ?= cargo

.PHONY: docs compose-check test test-offline services-up services-down check fmt lint bench bench-forest bench-embedded bench-kafka bench-api fuzz soak quickstart sample clean

## Start the real services, run every test (unit, integration against the services, CLI,
## property), stop the services. See scripts/test.sh.
test:
	scripts/test.sh

## Fuzz each target for 10 minutes (scripts/fuzz.sh; `make test` runs 45 s each).
fuzz:
	scripts/fuzz.sh --seconds 600

## The chaos soak for 30 minutes (scripts/soak.sh; `make test` runs 3 minutes).
soak:
	scripts/soak.sh --minutes 30

## Regenerate docs/configuration.md and docs/metrics.md from the code (tests/docs.rs
## checks them in `make test`).
docs:
	FRAUDSTREAM_WRITE_DOCS=1 $(CARGO) test --locked --test docs

## Only the tests that need no service.
test-offline:
	$(CARGO) test --workspace --locked --lib --bins --test cli --test accuracy --test decoders --test run_embedded --test monitoring --test drift_simulation --test docs

## Start or stop the services for development (eval "$$(scripts/services.sh up)").
services-up:
	scripts/services.sh up

services-down:
	scripts/services.sh down

## Formatting, lints and the compose file, as CI enforces them.
check: fmt lint compose-check

## Validate docker-compose.yml against the compose-spec schema.
compose-check:
	scripts/validate-compose.sh

fmt:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## Criterion benches of training and scoring, on generated data (benches/forest.rs).
bench:
	$(CARGO) bench --bench forest

## The benchmarks on the full Kaggle file (the shipped sample without ../shared), in
## scripts/bench/; each script's first lines say what it measures and prints.
## The forest engine against the `randomforest` crate (scripts/bench/forest.sh).
bench-forest:
	scripts/bench/forest.sh

## The embedded detector: throughput, CPU per transaction, peak RSS (scripts/bench/embedded.sh;
## its --shadow and --velocity measure shadow scoring and entity features).
bench-embedded:
	scripts/bench/embedded.sh

## The detector on Kafka: the hot path against the Python consumer, then end to end
## (scripts/bench/kafka.sh; starts its own broker and DynamoDB Local).
bench-kafka:
	scripts/bench/kafka.sh

## The HTTP API against the Python peer, measured with oha (scripts/bench/api.sh).
bench-api:
	scripts/bench/api.sh

## The README quickstart: train on the shipped sample, then score it.
quickstart:
	$(CARGO) run --release -- train --input data/creditcard-sample.csv --out out/model.fsm
	$(CARGO) run --release -- score --model out/model.fsm --input data/creditcard-sample.csv --out out/verdicts.csv

## Rebuild the shipped sample from the full dataset.
sample:
	scripts/make-sample.py

clean:
	$(CARGO) clean
	rm -rf out .cache .services .services-test
