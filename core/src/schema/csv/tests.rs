//! The CSV reader's tests.

use super::*;

/// The fields of `line` as the CSV state machine splits it (the fast path off).
fn split_slow(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut g = Fields::default();
    g.split_csv(line).map_err(|e| e.to_string())?;
    g.contiguous();
    Ok(g.iter().map(<[u8]>::to_vec).collect())
}

proptest::proptest! {
    #[test]
    fn the_fast_split_agrees_with_the_state_machine(
        line in proptest::collection::vec(
            proptest::sample::select(vec![b'1', b'.', b'-', b',', b'"', b' ', b'a']),
            1..40,
        )
    ) {
        let mut f = Fields::default();
        if f.split_plain(&line) {
            let fast: Vec<Vec<u8>> = f.iter().map(<[u8]>::to_vec).collect();
            proptest::prop_assert_eq!(Ok(fast), split_slow(&line));
        }
    }
}

#[test]
fn kaggle_lines_take_the_fast_path() {
    let mut f = Fields::default();
    assert!(f.split_plain(b"0,-1.35,2.5,\"0\""));
    let got: Vec<&[u8]> = f.iter().collect();
    assert_eq!(got, [&b"0"[..], b"-1.35", b"2.5", b"0"]);
    for slow in [
        &b"a,\"b,c\""[..],
        b"\"a\"\"b\"",
        b"",
        b"a\r",
        b"a\nb",
        b"a\"b",
    ] {
        assert!(!Fields::default().split_plain(slow), "{slow:?}");
    }
}

fn kaggle_line(values: &[f64], class: &str) -> String {
    let mut s: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    s.push(format!("\"{class}\""));
    s.join(",")
}

fn header() -> String {
    let mut h: Vec<String> = FIELD_NAMES.iter().map(|f| format!("\"{f}\"")).collect();
    h.push("\"Class\"".into());
    h.join(",")
}

#[test]
fn reads_published_layout() {
    let vals: Vec<f64> = (0..30).map(f64::from).collect();
    let text = format!(
        "{}\n{}\n{}\n",
        header(),
        kaggle_line(&vals, "0"),
        kaggle_line(&vals, "1")
    );
    let rows: Vec<_> = CsvReader::new("t.csv", text.as_bytes())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].id, "0");
    assert_eq!(rows[1].id, "1");
    assert_eq!(rows[1].label, Some(1));
    assert_eq!(rows[0].values[29], 29.0);
}

#[test]
fn reads_without_class() {
    let text = format!("{}\n{}\n", FIELD_NAMES.join(","), vec!["1.5"; 30].join(","));
    let mut r = CsvReader::new("t.csv", text.as_bytes()).unwrap();
    assert!(!r.layout().has_label());
    let tx = r.next().unwrap().unwrap();
    assert_eq!(tx.label, None);
    assert_eq!(tx.values[5], 1.5);
}

#[test]
fn errors_name_file_line_and_field() {
    let vals: Vec<f64> = (0..30).map(f64::from).collect();
    let mut bad = kaggle_line(&vals, "0");
    bad = bad.replacen("3,", "x3,", 1);
    let text = format!("{}\n{}\n{}\n", header(), kaggle_line(&vals, "0"), bad);
    let results: Vec<_> = CsvReader::new("data.csv", text.as_bytes())
        .unwrap()
        .collect();
    let err = results[1].as_ref().unwrap_err().to_string();
    assert_eq!(err, "data.csv:3: field `V3`: not a number: \"x3\"");
}

#[test]
fn each_bad_row_kind() {
    let vals: Vec<String> = (0..30).map(|v| v.to_string()).collect();
    let cases = [
        (
            format!("{},\"0\",9", vals.join(",")),
            "expected 31 fields, found 32",
        ),
        (
            format!("{},\"7\"", vals.join(",")),
            "field `Class`: unknown label \"7\"",
        ),
        (
            format!("{},NaN,\"0\"", vals[..29].join(",")),
            "field `Amount`: value is not finite",
        ),
        (
            format!("{},,\"0\"", vals[..29].join(",")),
            "missing required field `Amount`",
        ),
    ];
    for (line, want) in cases {
        let text = format!("{}\n{}\n", header(), line);
        let err = CsvReader::new("f.csv", text.as_bytes())
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("f.csv:2: "), "{err}");
        assert!(err.contains(want), "{err} should contain {want}");
    }
}

#[test]
fn an_unclosed_quote_or_a_long_line_costs_one_row() {
    let vals: Vec<f64> = (0..30).map(f64::from).collect();
    let good = kaggle_line(&vals, "0");
    let unclosed = good.replacen("\"0\"", "\"0", 1);
    let long = "9,".repeat(40_000);
    let text = format!("{}\n{good}\n{unclosed}\n{long}\n{good}\n", header());
    let results: Vec<_> = CsvReader::new("q.csv", text.as_bytes()).unwrap().collect();
    assert_eq!(results.len(), 4);
    assert!(results[0].is_ok() && results[3].is_ok());
    let e = results[1].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("q.csv:3: malformed CSV: unterminated quoted field"),
        "{e}"
    );
    let e = results[2].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("q.csv:4: record is 80000 bytes, over the limit"),
        "{e}"
    );
}

#[test]
fn an_id_outside_the_contract_is_refused() {
    let vals: Vec<String> = (0..30).map(|v| v.to_string()).collect();
    let text = format!(
        "id,{}\n{},{}\n",
        FIELD_NAMES.join(","),
        "x".repeat(2000),
        vals.join(",")
    );
    let e = CsvReader::new("i.csv", text.as_bytes())
        .unwrap()
        .next()
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid transaction id: 2000 bytes"), "{e}");
}

#[test]
fn header_must_have_kaggle_columns() {
    let missing = FIELD_NAMES[..29].join(",");
    let e = CsvReader::new("h.csv", format!("{missing}\n").as_bytes())
        .err()
        .unwrap();
    assert!(e.to_string().contains("missing required column \"Amount\""));
    let extra = format!("{},bogus", FIELD_NAMES.join(","));
    let e = CsvReader::new("h.csv", format!("{extra}\n").as_bytes())
        .err()
        .unwrap();
    assert!(e.to_string().contains("unexpected column \"bogus\""));
}

#[test]
fn write_then_read_round_trips() {
    let mut values = [0.0; NUM_FIELDS];
    values[3] = -0.123_456_789_012_345_67;
    values[29] = 149.62;
    let tx = Transaction {
        id: "abc".into(),
        values,
        label: Some(1),
        card_id: None,
        event_time: None,
        terminal_id: None,
        derived: Vec::new(),
    };
    let mut buf = Vec::new();
    write_kaggle_csv(&mut buf, vec![tx.clone()], true, true).unwrap();
    let back: Vec<_> = CsvReader::new("b", buf.as_slice())
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(back, vec![tx]);
}
