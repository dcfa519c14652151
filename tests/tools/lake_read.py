"""Read a fraudstream lake with another engine and print what it sees, as one JSON line:
the row count, every column with its type, and the rows per model version.

    lake_read.py spark hdfs://127.0.0.1:PORT/PATH
        Spark (pyspark 4, a local session): spark.read.parquet over the partitioned
        directory, types as Spark names them (DataType.simpleString), then
        GROUP BY model_version in Spark SQL.
    lake_read.py pyarrow s3://BUCKET/PREFIX ENDPOINT ACCESS_KEY SECRET_KEY
        pyarrow's S3 filesystem and datasets, hive partitioning (dt=/hour=), types as
        pyarrow prints them.
    lake_read.py duckdb DIR
        DuckDB's read_parquet over DIR/dt=*/hour=*/*.parquet with hive partitioning,
        types as DESCRIBE prints them, then GROUP BY model_version.

The tests compare the output with what the detector wrote (tests/lake_readers.rs).
"""
import json
import sys


def spark(url):
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .appName("fraudstream-lake-read")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        df = session.read.parquet(url)
        df.createOrReplaceTempView("lake")
        by_version = session.sql(
            "SELECT model_version, COUNT(*) AS n FROM lake GROUP BY model_version"
        ).collect()
        return {
            "count": df.count(),
            "schema": [[f.name, f.dataType.simpleString()] for f in df.schema.fields],
            "by_version": {r["model_version"]: r["n"] for r in by_version},
        }
    finally:
        session.stop()


def pyarrow_s3(url, endpoint, key, secret):
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    from pyarrow import fs

    scheme, _, rest = endpoint.partition("://")
    s3 = fs.S3FileSystem(
        access_key=key,
        secret_key=secret,
        endpoint_override=rest,
        scheme=scheme,
        region="us-east-1",
    )
    path = url.removeprefix("s3://")
    dataset = ds.dataset(path, filesystem=s3, format="parquet", partitioning="hive")
    table = dataset.to_table()
    counts = pc.value_counts(table.column("model_version"))
    return {
        "count": table.num_rows,
        "schema": [[f.name, str(f.type)] for f in table.schema],
        "by_version": {c["values"].as_py(): c["counts"].as_py() for c in counts},
    }


def duckdb_local(root):
    import duckdb

    con = duckdb.connect()
    source = (
        f"read_parquet('{root}/dt=*/hour=*/*.parquet', "
        "hive_partitioning = true, union_by_name = true)"
    )
    schema = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
    rows = con.execute(
        f"SELECT model_version, count(*) FROM {source} GROUP BY model_version"
    ).fetchall()
    return {
        "count": con.execute(f"SELECT count(*) FROM {source}").fetchone()[0],
        "schema": [[name, str(kind)] for name, kind, *_ in schema],
        "by_version": dict(rows),
    }


def main():
    engine, url, *rest = sys.argv[1:]
    if engine == "spark":
        out = spark(url)
    elif engine == "pyarrow":
        out = pyarrow_s3(url, *rest)
    elif engine == "duckdb":
        out = duckdb_local(url)
    else:
        sys.exit(f"unknown engine {engine}: spark, pyarrow or duckdb")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
