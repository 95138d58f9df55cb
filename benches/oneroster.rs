//! oneroster benchmark: a generated SDS set of 100,000 students, 5,000 teachers, 5,000
//! sections and 500,000 enrollments (plus 5,000 teacher rosters) converted to the
//! OneRoster 1.2 set, exactly as a `oneroster` job does (minus the enqueue of the
//! upload). Prints the time, rows/s and the peak RSS (VmHWM); the issue asks for at most
//! 10 s and 300 MB.
//!
//! cargo bench --bench oneroster -- [--students N] [--enrollments N]

use clap::Parser;
use jobd::clock::SystemClock;
use jobd::config::Config;
use jobd::handlers::oneroster::convert_payload;
use jobd::handlers::{JobContext, NoSyncState, StopSignal};
use jobd::job::Outcome;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    students: usize,
    #[arg(long, default_value_t = 5_000)]
    teachers: usize,
    #[arg(long, default_value_t = 5_000)]
    sections: usize,
    #[arg(long, default_value_t = 500_000)]
    enrollments: usize,
    /// Ignored: cargo bench passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn file(dir: &Path, name: &str, header: &str, rows: usize, row: impl Fn(usize) -> String) {
    // Streamed to disk, so generating the set does not raise the peak RSS.
    let mut out = std::io::BufWriter::new(std::fs::File::create(dir.join(name)).unwrap());
    writeln!(out, "{header}").unwrap();
    for i in 0..rows {
        writeln!(out, "{}", row(i)).unwrap();
    }
    out.flush().unwrap();
}

fn main() {
    let a = Args::parse();
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let set = data.join("spool/sds/20251027");
    std::fs::create_dir_all(&set).unwrap();
    let schools = 50;
    file(&set, "School.csv", "SIS ID,Name", schools, |i| {
        format!("{i},第{i}小学校")
    });
    file(
        &set,
        "Student.csv",
        "SIS ID,School SIS ID,First Name,Last Name,Username,Grade",
        a.students,
        |i| {
            format!(
                "S{i},{},太郎{i},山田,s{i}@example.jp,{}",
                i % schools,
                1 + i % 6
            )
        },
    );
    file(
        &set,
        "Teacher.csv",
        "SIS ID,School SIS ID,First Name,Last Name,Username,Phone",
        a.teachers,
        |i| {
            format!(
                "T{i},{},一郎{i},鈴木,t{i}@example.jp,03-0000-{i:04}",
                i % schools
            )
        },
    );
    file(
        &set,
        "Section.csv",
        "SIS ID,School SIS ID,Section Name,Section Number,Term SIS ID,Term Name,Term StartDate,Term EndDate,Course SIS ID,Course Name,Course Number,Course Subject,Periods",
        a.sections,
        |i| format!("SEC{i},{},{i}組 算数,{i},T2025,2025年度,20250401,20260331,C{},算数{},M{},Math,{}", i % schools, i % 500, i % 500, i % 500, 1 + i % 6),
    );
    let per = (a.enrollments / a.students.max(1)).max(1);
    file(
        &set,
        "StudentEnrollment.csv",
        "Section SIS ID,SIS ID",
        a.enrollments,
        |i| {
            format!(
                "SEC{},S{}",
                (i % per * 997 + i / per) % a.sections,
                (i / per) % a.students
            )
        },
    );
    file(
        &set,
        "TeacherRoster.csv",
        "Section SIS ID,SIS ID",
        a.sections,
        |i| format!("SEC{i},T{}", i % a.teachers),
    );
    let size: u64 = std::fs::read_dir(&set)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let config = Config::from_toml(
        &format!(
            "[daemon]\ndatabase = \"{}\"\ndata_dir = \"{}\"\n",
            tmp.path().join("jobs.db").display(),
            data.display()
        ),
        "bench",
    )
    .unwrap();
    let ctx = JobContext {
        clock: Arc::new(SystemClock),
        config: Arc::new(config),
        data_dir: data.clone(),
        deadline: Instant::now() + Duration::from_secs(600),
        timeout: Duration::from_secs(600),
        stop: Arc::new(StopSignal::default()),
        children: None,
        sync_state: Arc::new(NoSyncState),
        progress_report: Default::default(),
        holds: Default::default(),
    };
    let hwm_before = vm_hwm_kib();
    let start = Instant::now();
    let outcome = convert_payload(&json!({"dir": set, "name": "20251027"}), "default", &ctx);
    let elapsed = start.elapsed().as_secs_f64();
    let hwm = vm_hwm_kib();
    let Outcome::Success { detail, .. } = outcome else {
        panic!("conversion failed: {outcome:?}");
    };
    let detail = detail.unwrap();
    let rows = a.students + a.teachers + a.sections * 2 + a.enrollments + schools;
    println!(
        "oneroster: {} students, {} teachers, {} sections, {} enrollments ({:.1} MB of SDS CSV)",
        a.students,
        a.teachers,
        a.sections,
        a.enrollments,
        size as f64 / 1e6
    );
    println!("  records written: {}", detail["records"]);
    println!("  errors: {}", detail["errors"]);
    println!(
        "  {elapsed:.2} s, {:.0} input rows/s",
        rows as f64 / elapsed
    );
    println!(
        "  peak RSS (VmHWM): {:.1} MB (before converting: {:.1} MB)",
        hwm as f64 / 1024.0,
        hwm_before as f64 / 1024.0
    );
}
