# Sourced by the benchmark scripts: sets `data` to the full Kaggle file, unpacked once into
# .cache/ from ../shared when it is there, else to the shipped sample.
data=.cache/creditcard.csv
if [[ ! -f $data ]]; then
  if [[ -f ../shared/data/creditcard.csv.xz ]]; then
    mkdir -p .cache && xz -dkc ../shared/data/creditcard.csv.xz > "$data"
  else
    data=data/creditcard-sample.csv
  fi
fi
