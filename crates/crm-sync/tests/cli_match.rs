//! `crm-sync match` end to end: CSV in, CSV out, exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("crm-sync-match-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn files() -> (PathBuf, PathBuf) {
    let d = dir();
    let b = d.join("bookings.csv");
    let c = d.join("campaigns.csv");
    std::fs::write(&b, "booking_id,campaign_name\nB1,Acme Spring Sale\nB2,Initech Q3\nB3,Globex Autumn Launch\nB4,\"Quoted, with comma\"\n").unwrap();
    std::fs::write(&c, "id,name\nC1,ACME spring sale\nC2,Initech Q4 Video\nC3,acme sprng sale\nC4,Globex Autumn Launch\nC5,globex autumn launch!\nC6,\"quoted, with comma\"\n").unwrap();
    (b, c)
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_crm-sync"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn one_line_per_booking_with_status() {
    let (b, c) = files();
    let (code, out, err) = run(&[
        "match",
        "--bookings",
        b.to_str().unwrap(),
        "--campaigns",
        c.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "booking_id,status,campaign_id,campaign_name,score,candidates"
    );
    assert_eq!(lines[1], "B1,matched,C1,ACME spring sale,1.0000,2");
    assert_eq!(lines[2], "B2,unmatched,,,,0");
    assert_eq!(lines[3], "B3,multiple,,,,2");
    assert_eq!(lines[4], "B4,matched,C6,\"quoted, with comma\",1.0000,1");
}

#[test]
fn all_pairs_at_a_threshold_to_a_file() {
    let (b, c) = files();
    let out_path = dir().join("pairs.csv");
    let (code, _, err) = run(&[
        "match",
        "--bookings",
        b.to_str().unwrap(),
        "--campaigns",
        c.to_str().unwrap(),
        "--all-pairs",
        "--threshold",
        "0.9",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let pairs = std::fs::read_to_string(out_path).unwrap();
    assert_eq!(
        pairs,
        "booking_id,campaign_id,score\nB1,C1,100.0000\nB1,C3,96.7742\nB3,C4,100.0000\nB3,C5,100.0000\nB4,C6,100.0000\n"
    );
    // At 0.97 the misspelt campaign drops out.
    let (_, out, _) = run(&[
        "match",
        "--bookings",
        b.to_str().unwrap(),
        "--campaigns",
        c.to_str().unwrap(),
        "--all-pairs",
        "--threshold",
        "0.97",
    ]);
    assert!(!out.contains("C3"));
}

#[test]
fn mistakes_exit_2_with_what_to_fix() {
    let (b, c) = files();
    let (code, _, err) = run(&[
        "match",
        "--bookings",
        "/no/such/file.csv",
        "--campaigns",
        c.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot open /no/such/file.csv"), "{err}");
    let (code, _, err) = run(&[
        "match",
        "--bookings",
        b.to_str().unwrap(),
        "--campaigns",
        c.to_str().unwrap(),
        "--name-column",
        "title",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("no column \"title\""), "{err}");
    let (code, _, _) = run(&[
        "match",
        "--bookings",
        b.to_str().unwrap(),
        "--campaigns",
        c.to_str().unwrap(),
        "--threshold",
        "1.5",
    ]);
    assert_eq!(code, 2, "a threshold above 1 is a usage error");
}
