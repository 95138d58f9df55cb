//! The `oneroster` kind: an SDS v1 folder set (Japanese names, a BOM, a Shift_JIS file,
//! an enrollment pointing at a missing section) becomes the expected OneRoster 1.2 files,
//! field by field, with deterministic ids, verified checksums and record counts, and one
//! multipart upload to a server on 127.0.0.1 (4xx dead at once, 413 named, 503 retried),
//! the upload's recorded uploadId, the status poll, the zip archive and `on_error`.

use crate::common::{DaemonRun, InProcessDaemon};
use crate::http_server::{split_multipart, HttpServer, Request, Response};

use jobd::clock::{Clock, ManualClock};
use jobd::job::{JobId, JobState, NewJob};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

// ---- a server that records uploads ----

struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Request>>>,
    _server: HttpServer,
}

impl Server {
    /// Answers request n (from 0) with `status(n)`.
    fn start(status: impl Fn(usize) -> u16 + Send + Sync + 'static) -> Server {
        Server::answering(move |n, _| {
            (
                status(n),
                format!("{{\"uploadId\":\"u-{n}\",\"status\":\"accepted\"}}"),
            )
        })
    }

    /// Answers request n (from 0) with `answer(n, request)`: a status and a JSON body.
    fn answering(
        answer: impl Fn(usize, &Request) -> (u16, String) + Send + Sync + 'static,
    ) -> Server {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let recorded = seen.clone();
        let handler = move |request: Request| {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let (status, body) = answer(n, &request);
            recorded.lock().unwrap().push(request);
            Response {
                status,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: body.into_bytes(),
            }
        };
        let server = HttpServer::start(Arc::new(handler));
        Server {
            base: server.base.clone(),
            seen,
            _server: server,
        }
    }

    fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }
}

// ---- a daemon around one test ----

fn setup(server: &Server) -> InProcessDaemon {
    setup_with(server, "")
}

/// `endpoint` is TOML added to `[endpoints.roster]`.
fn setup_with(server: &Server, endpoint: &str) -> InProcessDaemon {
    InProcessDaemon::new(
        "workers = 2\nsynchronous = \"normal\"",
        &format!(
            "[retry]\nbase = \"100ms\"\nfactor = 2.0\njitter = 0.0\ncap = \"1s\"\nmax_attempts = 5\n\
             [endpoints.roster]\nbase_url = \"{base}\"\n{endpoint}\n",
            base = server.base,
        ),
    )
}

/// The daemon on `clock` instead of the system's.
fn on_clock(clock: Arc<dyn Clock>) -> DaemonRun {
    DaemonRun {
        clock,
        ..DaemonRun::default()
    }
}

// ---- the fixture ----

const SCHOOL: &str = "SIS ID,Name\n1,さくら小学校\n2,\"Midori, Junior High\"\n";
const STUDENT: &str = "SIS ID,School SIS ID,First Name,Last Name,Username,Grade,Middle Name\n\
S1,1,太郎,山田,taro@example.jp,5,\n\
S2,2,花子,佐藤,,7,\n";
const TEACHER: &str = "SIS ID,School SIS ID,First Name,Last Name,Username,Phone\n\
T1,1,一郎,鈴木,ichiro@example.jp,03-1234-5678\n";
const SECTION: &str = "SIS ID,School SIS ID,Section Name,Section Number,Term SIS ID,Term Name,Term StartDate,Term EndDate,Course SIS ID,Course Name,Course Number,Course Subject,Periods\n\
SEC1,1,5年1組 算数,501,T2025,2025年度,20250401,2026-03-31,C-MATH5,算数5年,M5,Math,1\n\
SEC2,1,5年2組 算数,502,T2025,2025年度,20250401,2026-03-31,C-MATH5,算数5年,M5,Math,2\n";
const ENROLL: &str = "Section SIS ID,SIS ID\nSEC1,S1\nSEC9,S2\n";
const ROSTER: &str = "Section SIS ID,SIS ID\nSEC1,T1\nSEC2,T1\n";

/// Writes the SDS set under `data/<rel>`: names in mixed case, student.csv with a BOM,
/// teacher.csv in Shift_JIS.
fn write_fixture(data: &Path, rel: &str) -> PathBuf {
    let dir = data.join(rel);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("School.csv"), SCHOOL).unwrap();
    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice(STUDENT.as_bytes());
    std::fs::write(dir.join("Student.csv"), bom).unwrap();
    let (sjis, _, bad) = encoding_rs::SHIFT_JIS.encode(TEACHER);
    assert!(!bad);
    std::fs::write(dir.join("Teacher.csv"), &sjis[..]).unwrap();
    std::fs::write(dir.join("Section.csv"), SECTION).unwrap();
    std::fs::write(dir.join("StudentEnrollment.csv"), ENROLL).unwrap();
    std::fs::write(dir.join("teacherroster.csv"), ROSTER).unwrap();
    dir
}

fn job_for(dir: &Path) -> NewJob {
    NewJob::new(
        "oneroster",
        json!({"dir": dir, "name": "20251027", "endpoint": "roster", "path": "/api/v1/upload",
               "source_system_name": "SDS2Roster"}),
    )
}

fn id(entity: &str, sis: &str) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_DNS, format!("{entity}:{sis}").as_bytes()).to_string()
}

fn hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// The records of a CSV file: (header, rows).
fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_path(path)
        .unwrap();
    let mut rows: Vec<Vec<String>> = r
        .records()
        .map(|rec| rec.unwrap().iter().map(String::from).collect())
        .collect();
    let header = rows.remove(0);
    (header, rows)
}

fn out_dir(s: &InProcessDaemon) -> PathBuf {
    let dated = s.data().join("output");
    let day = std::fs::read_dir(&dated).unwrap().next().unwrap().unwrap();
    day.path().join("oneroster").join("20251027")
}

/// Checks the header and rows of `file` against `expected`, field by field.
fn check(dir: &Path, file: &str, header: &str, expected: &[Vec<&str>]) {
    let (h, rows) = read_csv(&dir.join(file));
    assert_eq!(h.join(","), header, "{file} header");
    assert_eq!(rows.len(), expected.len(), "{file}: {rows:?}");
    for (row, want) in rows.iter().zip(expected) {
        assert_eq!(row.len(), want.len(), "{file}: {row:?}");
        for (i, (got, want)) in row.iter().zip(want).enumerate() {
            assert_eq!(got, want, "{file} column {} ({row:?})", h[i]);
        }
    }
}

// ---- tests ----

#[test]
fn oneroster_converts_the_set_field_by_field_and_uploads_every_part() {
    let server = Server::start(|_| 202);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    let ids = s.run(vec![job_for(&dir)]);
    let job = s.job(ids[0]);
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.last_error);

    let out = out_dir(&s);
    let metadata: Value =
        serde_json::from_slice(&std::fs::read(out.join("metadata.json")).unwrap()).unwrap();
    let now = metadata["uploadedAt"].as_str().unwrap().to_string();
    assert_eq!(now.len(), "2012-04-23T18:25:43.511Z".len(), "{now}");
    assert!(now.ends_with('Z'));
    let s1 = id("school", "1");
    let s2 = id("school", "2");

    check(
        &out,
        "orgs.csv",
        "sourcedId,status,dateLastModified,name,type,identifier,parentSourcedId",
        &[
            vec![&s1, "", "", "さくら小学校", "school", "1", ""],
            vec![&s2, "", "", "Midori, Junior High", "school", "2", ""],
        ],
    );
    let (st1, st2, t1) = (
        id("student", "S1"),
        id("student", "S2"),
        id("teacher", "T1"),
    );
    let e = "";
    check(
        &out,
        "users.csv",
        "sourcedId,status,dateLastModified,enabledUser,username,userIds,givenName,familyName,middleName,identifier,email,sms,phone,agentSourcedIds,grades,password,userMasterIdentifier,preferredGivenName,preferredMiddleName,preferredFamilyName,primaryOrgSourcedId,pronouns",
        &[
            vec![&st1, "", "", "true", "taro@example.jp", "{SIS:S1}", "太郎", "山田", e, "S1", "taro@example.jp", e, e, e, "5", e, e, e, e, e, &s1, e],
            vec![&st2, "", "", "true", "S2", "{SIS:S2}", "花子", "佐藤", e, "S2", e, e, e, e, "7", e, e, e, e, e, &s2, e],
            vec![&t1, "", "", "true", "ichiro@example.jp", "{SIS:T1}", "一郎", "鈴木", e, "T1", "ichiro@example.jp", "03-1234-5678", "03-1234-5678", e, e, e, e, e, e, e, &s1, e],
        ],
    );
    check(
        &out,
        "roles.csv",
        "sourcedId,status,dateLastModified,userSourcedId,roleType,role,beginDate,endDate,orgSourcedId,userProfileSourcedId",
        &[
            vec![&id("role", "student:S1:1"), "", "", &st1, "primary", "student", e, e, &s1, e],
            vec![&id("role", "student:S2:2"), "", "", &st2, "primary", "student", e, e, &s2, e],
            vec![&id("role", "teacher:T1:1"), "", "", &t1, "primary", "teacher", e, e, &s1, e],
        ],
    );
    let course = id("course", "C-MATH5");
    check(
        &out,
        "courses.csv",
        "sourcedId,status,dateLastModified,schoolYearSourcedId,title,courseCode,grades,orgSourcedId,subjects,subjectCodes",
        &[vec![&course, "", "", e, "算数5年", "M5", e, &s1, "Math", e]],
    );
    let term = id("term", "T2025");
    let (c1, c2) = (id("class", "SEC1"), id("class", "SEC2"));
    check(
        &out,
        "classes.csv",
        "sourcedId,status,dateLastModified,title,grades,courseSourcedId,classCode,classType,location,schoolSourcedId,termSourcedIds,subjects,subjectCodes,periods",
        &[
            vec![&c1, "", "", "5年1組 算数", e, &course, "501", "scheduled", e, &s1, &term, "Math", e, "1"],
            vec![&c2, "", "", "5年2組 算数", e, &course, "502", "scheduled", e, &s1, &term, "Math", e, "2"],
        ],
    );
    check(
        &out,
        "enrollments.csv",
        "sourcedId,status,dateLastModified,classSourcedId,schoolSourcedId,userSourcedId,role,primary,beginDate,endDate",
        &[
            vec![&id("enrollment", "SEC1:student:S1"), "", "", &c1, &s1, &st1, "student", "false", e, e],
            vec![&id("enrollment", "SEC1:teacher:T1"), "", "", &c1, &s1, &t1, "teacher", "true", e, e],
            vec![&id("enrollment", "SEC2:teacher:T1"), "", "", &c2, &s1, &t1, "teacher", "true", e, e],
        ],
    );
    check(
        &out,
        "academicSessions.csv",
        "sourcedId,status,dateLastModified,title,type,startDate,endDate,parentSourcedId,schoolYear",
        &[vec![
            &term,
            "",
            "",
            "2025年度",
            "term",
            "2025-04-01",
            "2026-03-31",
            e,
            "2026",
        ]],
    );
    // A file without data rows is not allowed in a set: demographics.csv is not written.
    assert!(!out.join("demographics.csv").exists());
    // The enrollment in the missing section is skipped and reported, the files named
    // as they are on disk.
    let (h, errors) = read_csv(&out.join("errors.csv"));
    assert_eq!(h, ["file", "line", "field", "value", "reason"]);
    assert_eq!(
        errors,
        vec![vec![
            "StudentEnrollment.csv".to_string(),
            "3".into(),
            "Section SIS ID".into(),
            "SEC9".into(),
            "no such section in Section.csv".into()
        ]]
    );
    // manifest.csv
    let (h, manifest) = read_csv(&out.join("manifest.csv"));
    assert_eq!(h, ["propertyName", "value"]);
    let get = |k: &str| {
        manifest
            .iter()
            .find(|r| r[0] == k)
            .map(|r| r[1].clone())
            .unwrap_or_else(|| panic!("{k} missing"))
    };
    assert_eq!(get("manifest.version"), "1.0");
    assert_eq!(get("oneroster.version"), "1.2");
    assert_eq!(get("file.users"), "bulk");
    assert_eq!(get("file.roles"), "bulk");
    assert_eq!(get("file.demographics"), "absent");
    assert_eq!(get("file.results"), "absent");
    assert_eq!(get("source.systemName"), "SDS2Roster");

    // Format: UTF-8 without BOM, LF, RFC 4180 quoting, mode 0640; no temp files left.
    let orgs = std::fs::read(out.join("orgs.csv")).unwrap();
    assert!(!orgs.starts_with(b"\xEF\xBB\xBF"));
    assert!(!orgs.contains(&b'\r'));
    assert!(String::from_utf8(orgs)
        .unwrap()
        .contains(",\"Midori, Junior High\",school,"));
    use std::os::unix::fs::PermissionsExt;
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&out).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            entry.metadata().unwrap().permissions().mode() & 0o777,
            0o640
        );
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "academicSessions.csv",
            "classes.csv",
            "courses.csv",
            "enrollments.csv",
            "errors.csv",
            "manifest.csv",
            "metadata.json",
            "orgs.csv",
            "roles.csv",
            "users.csv"
        ]
    );

    // metadata.json: checksums and record counts recomputed.
    assert_eq!(metadata["source"], "SDS2Roster");
    assert_eq!(metadata["version"], "1.2");
    let counts = metadata["recordCounts"].as_object().unwrap();
    let sums = metadata["checksums"].as_object().unwrap();
    assert_eq!(counts.len(), 8);
    for (file, count) in counts {
        let bytes = std::fs::read(out.join(file)).unwrap();
        assert_eq!(sums[file], hex(&bytes), "{file}");
        let (_, rows) = read_csv(&out.join(file));
        assert_eq!(count.as_u64().unwrap(), rows.len() as u64, "{file}");
    }
    assert_eq!(counts["users.csv"], 3);
    assert_eq!(counts["enrollments.csv"], 3);

    // The upload: one request with metadata.json and every CSV with records.
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let request = &seen[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.url, "/api/v1/upload");
    let content_type = header(request, "Content-Type").unwrap();
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .unwrap()
        .trim_matches('"');
    let parts = split_multipart(&request.body, boundary);
    let mut uploaded: Vec<String> = Vec::new();
    for (headers, body) in &parts {
        let filename = headers
            .split("filename=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .to_string();
        assert!(headers.contains("name=\"files\""), "{headers}");
        let want_type = if filename == "metadata.json" {
            "content-type: application/json"
        } else {
            "content-type: text/csv"
        };
        assert!(headers.to_lowercase().contains(want_type), "{headers}");
        assert_eq!(
            hex(body),
            hex(&std::fs::read(out.join(&filename)).unwrap()),
            "{filename} arrived intact"
        );
        uploaded.push(filename);
    }
    assert_eq!(
        uploaded,
        [
            "metadata.json",
            "manifest.csv",
            "orgs.csv",
            "users.csv",
            "roles.csv",
            "courses.csv",
            "classes.csv",
            "enrollments.csv",
            "academicSessions.csv"
        ]
    );
    // metadata.json describes exactly the other files uploaded, in counts and checksums.
    let mut described: Vec<&str> = counts.keys().map(String::as_str).collect();
    let mut others: Vec<&str> = uploaded[1..].iter().map(String::as_str).collect();
    described.sort();
    others.sort();
    assert_eq!(described, others);
    let mut summed: Vec<&str> = sums.keys().map(String::as_str).collect();
    summed.sort();
    assert_eq!(summed, others);
    let uploads = s.jobs_of("http");
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].state, JobState::Succeeded);
    assert!(uploads[0]
        .unique_key
        .as_deref()
        .unwrap()
        .starts_with("oneroster:"));
}

#[test]
fn oneroster_runs_again_with_identical_ids_and_no_second_upload() {
    let server = Server::start(|_| 202);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    let strip = |out: &Path| -> Vec<(String, Vec<Vec<String>>)> {
        let mut files = Vec::new();
        for name in [
            "orgs",
            "users",
            "roles",
            "courses",
            "classes",
            "enrollments",
        ] {
            let (_, mut rows) = read_csv(&out.join(format!("{name}.csv")));
            for row in &mut rows {
                row[2].clear();
            }
            files.push((name.to_string(), rows));
        }
        files
    };
    // The second run comes a minute later by the daemon's clock: ids and the manifest
    // must not depend on the time of the run.
    let clock = Arc::new(ManualClock::new(1_761_546_645_123));
    s.run_with(vec![job_for(&dir)], on_clock(clock.clone()));
    let first = strip(&out_dir(&s));
    let manifest = std::fs::read(out_dir(&s).join("manifest.csv")).unwrap();
    clock.advance(Duration::from_secs(60));
    let ids = s.run_with(vec![job_for(&dir)], on_clock(clock));
    assert_eq!(s.job(ids[0]).state, JobState::Succeeded);
    assert_eq!(first, strip(&out_dir(&s)));
    assert_eq!(
        manifest,
        std::fs::read(out_dir(&s).join("manifest.csv")).unwrap()
    );
    assert_eq!(server.seen().len(), 1, "the same folder is uploaded once");
    assert_eq!(s.jobs_of("http").len(), 1);
}

#[test]
fn oneroster_upload_4xx_is_dead_without_retry() {
    let server = Server::start(|_| 422);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    let ids = s.run(vec![job_for(&dir)]);
    assert_eq!(s.job(ids[0]).state, JobState::Succeeded);
    let uploads = s.jobs_of("http");
    assert_eq!(uploads[0].state, JobState::Dead);
    assert_eq!(uploads[0].attempts, 1);
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn oneroster_upload_503_is_retried() {
    let server = Server::start(|n| if n < 2 { 503 } else { 202 });
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    s.run(vec![job_for(&dir)]);
    let uploads = s.jobs_of("http");
    assert_eq!(uploads[0].state, JobState::Succeeded);
    assert_eq!(uploads[0].attempts, 3);
    assert_eq!(server.seen().len(), 3);
}

#[test]
fn oneroster_an_error_in_a_required_file_makes_the_job_dead_with_the_report() {
    let server = Server::start(|_| 202);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    std::fs::write(
        dir.join("Student.csv"),
        "SIS ID,School SIS ID,First Name,Last Name,Username\nS1,1,太郎,山田,not-an-email\nS2,7,花子,佐藤,\n",
    )
    .unwrap();
    let ids = s.run(vec![job_for(&dir)]);
    let job = s.job(ids[0]);
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.attempts, 1);
    let error = job.last_error.unwrap();
    assert!(error.contains("error(s) in required files"), "{error}");
    let (_, errors) = read_csv(&out_dir(&s).join("errors.csv"));
    let student: Vec<_> = errors.iter().filter(|r| r[0] == "Student.csv").collect();
    assert_eq!(student.len(), 2, "{errors:?}");
    assert_eq!(
        student[0][1..],
        ["2", "Username", "not-an-email", "not an email address"]
    );
    assert_eq!(
        student[1][1..],
        ["3", "School SIS ID", "7", "no such school in School.csv"]
    );
    assert!(s.jobs_of("http").is_empty());
    let left: Vec<String> = std::fs::read_dir(out_dir(&s))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        ["errors.csv"],
        "no OneRoster file and no temporary file"
    );
}

#[test]
fn oneroster_a_missing_required_file_is_refused() {
    let server = Server::start(|_| 202);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    std::fs::remove_file(dir.join("Teacher.csv")).unwrap();
    let ids = s.run(vec![job_for(&dir)]);
    let job = s.job(ids[0]);
    assert_eq!(job.state, JobState::Dead);
    assert!(job.last_error.unwrap().contains("teacher.csv is missing"));
}

fn header<'a>(r: &'a Request, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[test]
fn oneroster_a_watched_folder_set_is_converted_and_uploaded_end_to_end() {
    let server = Server::start(|_| 202);
    let watch = format!(
        "[endpoints.roster]\nbase_url = \"{}\"\n\
         [[watch]]\npath = \"{{dir}}/in\"\nmode = \"dir\"\nsettle = \"200ms\"\nrescan = \"1s\"\n\
         kind = \"oneroster\"\nrequired = [\"school.csv\", \"student.csv\", \"teacher.csv\"]\n\
         optional = [\"section.csv\", \"studentenrollment.csv\", \"teacherroster.csv\"]\n\
         [watch.payload]\nendpoint = \"roster\"\npath = \"/api/v1/upload\"\n",
        server.base
    );
    let daemon = crate::ingest::TestDaemon::start(&watch);
    let staged = write_fixture(daemon.dir.path(), "staging/20251027");
    std::fs::rename(&staged, daemon.input.join("20251027")).unwrap();
    daemon.wait_for_jobs(
        "the set to be converted and uploaded",
        Duration::from_secs(20),
        |jobs| {
            let done = |kind: &str| {
                jobs.iter()
                    .any(|j| j.kind == kind && j.state == JobState::Succeeded)
            };
            done("oneroster") && done("http")
        },
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].url, "/api/v1/upload");
    let day = std::fs::read_dir(daemon.data.join("output"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let (_, users) = read_csv(&day.join("oneroster/20251027/users.csv"));
    assert_eq!(users.len(), 3);
    assert_eq!(users[0][6], "太郎");
}

/// `job_for` with `extra` merged into its payload.
fn job_with(dir: &Path, extra: Value) -> NewJob {
    let mut job = job_for(dir);
    for (key, value) in extra.as_object().unwrap() {
        job.payload[key] = value.clone();
    }
    job
}

fn last_detail(s: &InProcessDaemon, id: JobId) -> Value {
    let attempts = s.db().attempts(id).unwrap();
    attempts.last().unwrap().detail.clone().unwrap()
}

#[test]
fn oneroster_upload_413_is_dead_and_named_payload_too_large() {
    let server = Server::answering(|_, _| (413, "{\"error\":\"at most 10 MB per upload\"}".into()));
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    s.run(vec![job_for(&dir)]);
    let uploads = s.jobs_of("http");
    assert_eq!(uploads[0].state, JobState::Dead);
    assert_eq!(uploads[0].attempts, 1, "413 is not retried");
    let error = uploads[0].last_error.clone().unwrap();
    assert!(
        error.starts_with("HTTP 413 payload too large from POST "),
        "{error}"
    );
    assert!(
        error.ends_with(": {\"error\":\"at most 10 MB per upload\"}"),
        "{error}"
    );
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn oneroster_upload_records_the_upload_id_shown_by_jobctl() {
    let server = Server::start(|_| 202);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    s.run(vec![job_for(&dir)]);
    let upload = &s.jobs_of("http")[0];
    assert_eq!(upload.state, JobState::Succeeded);
    assert_eq!(upload.payload["record"], json!(["uploadId"]));
    // No status poll unless asked for.
    assert!(s.jobs_of("oneroster_status").is_empty());

    let shown: Value =
        serde_json::from_str(&s.jobctl(&["show", "--json", &upload.id.to_string()])).unwrap();
    let attempts = shown["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["detail"]["status"], 202);
    assert_eq!(
        attempts[0]["detail"]["recorded"],
        json!({"uploadId": "u-0"})
    );
    let human = s.jobctl(&["show", &upload.id.to_string()]);
    assert!(
        human.contains("recorded  {\"uploadId\":\"u-0\"}"),
        "{human}"
    );
}

/// The upload API of the reference: POST answers 202 with an uploadId; GET
/// `/api/v1/upload/{id}` answers with `status(n)` for the n-th poll (from 0).
fn upload_api(status: impl Fn(usize) -> String + Send + Sync + 'static) -> Server {
    let polls = AtomicUsize::new(0);
    Server::answering(move |_, request| {
        if request.method == "POST" {
            return (
                202,
                "{\"uploadId\":\"u-7\",\"status\":\"accepted\",\"message\":\"queued\"}".into(),
            );
        }
        if request.url != "/api/v1/upload/u-7" {
            return (404, "{\"error\":\"no such upload\"}".into());
        }
        (200, status(polls.fetch_add(1, Ordering::SeqCst)))
    })
}

#[test]
fn oneroster_status_job_polls_until_the_upload_is_completed() {
    let server = upload_api(|n| {
        match n {
        0 | 1 => "{\"status\":\"processing\"}".into(),
        _ => "{\"status\":\"completed\",\"message\":\"105 users\",\"processedAt\":\"2025-10-27T06:31:00.000Z\"}".into(),
    }
    });
    let token = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token.path(), "s3cret-token").unwrap();
    let s = setup_with(
        &server,
        &format!(
            "[endpoints.roster.auth]\ntype = \"bearer\"\ntoken_file = \"{}\"\n",
            token.path().display()
        ),
    );
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    s.run(vec![job_with(
        &dir,
        json!({"status_poll": true, "poll_interval": "300ms", "max_polls": 10}),
    )]);
    let upload = &s.jobs_of("http")[0];
    assert_eq!(upload.state, JobState::Succeeded);
    let polls = s.jobs_of("oneroster_status");
    assert_eq!(polls.len(), 1);
    let poll = &polls[0];
    assert_eq!(poll.state, JobState::Succeeded, "{:?}", poll.last_error);
    assert_eq!(
        poll.parent_id,
        Some(upload.id),
        "enqueued by the upload's completion"
    );
    assert_eq!(poll.max_attempts, Some(10));
    assert_eq!(poll.attempts, 3, "processing, processing, completed");
    let detail = last_detail(&s, poll.id);
    assert_eq!(detail["status"], "completed");
    assert_eq!(detail["uploadId"], "u-7");
    assert_eq!(detail["message"], "105 users");
    let history = s.db().attempts(poll.id).unwrap();
    assert_eq!(history[0].outcome, "retry");
    assert_eq!(
        history[0].error.as_deref(),
        Some("upload u-7 is processing; next poll in 300ms")
    );

    let seen = server.seen();
    let gets: Vec<&Request> = seen.iter().filter(|r| r.method == "GET").collect();
    assert_eq!(gets.len(), 3);
    for get in &gets {
        assert_eq!(get.url, "/api/v1/upload/u-7");
        assert_eq!(header(get, "Authorization"), Some("Bearer s3cret-token"));
    }
    for pair in gets.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(290),
            "polled again after {gap:?}"
        );
    }
}

#[test]
fn oneroster_status_job_is_dead_with_the_servers_reason_when_the_upload_failed() {
    let server = upload_api(|_| {
        "{\"status\":\"failed\",\"message\":\"users.csv line 3: unknown org\"}".into()
    });
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    s.run(vec![job_with(
        &dir,
        json!({"status_poll": true, "poll_interval": "100ms"}),
    )]);
    let poll = &s.jobs_of("oneroster_status")[0];
    assert_eq!(poll.state, JobState::Dead);
    assert_eq!(poll.attempts, 1);
    assert_eq!(
        poll.last_error.as_deref(),
        Some("upload u-7 failed: users.csv line 3: unknown org")
    );
    assert_eq!(last_detail(&s, poll.id)["status"], "failed");
}

#[test]
fn oneroster_status_job_gives_up_after_max_polls() {
    let server = upload_api(|_| "{\"status\":\"processing\"}".into());
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    s.run(vec![job_with(
        &dir,
        json!({"status_poll": true, "poll_interval": "100ms", "max_polls": 2}),
    )]);
    let poll = &s.jobs_of("oneroster_status")[0];
    assert_eq!(poll.state, JobState::Dead);
    assert_eq!(poll.attempts, 2);
    let error = poll.last_error.clone().unwrap();
    assert!(
        error.starts_with("attempts exhausted (2/2); last error: upload u-7 is processing"),
        "{error}"
    );
    let gets = server.seen().iter().filter(|r| r.method == "GET").count();
    assert_eq!(gets, 2);
}

#[test]
fn oneroster_archive_zip_holds_the_set_and_is_the_same_for_the_same_input() {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start(|_| 202);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    let mut job = job_with(&dir, json!({"archive": "zip"}));
    job.payload.as_object_mut().unwrap().remove("endpoint");
    // A fixed clock: the same input at the same run time must give the same bytes.
    let clock = Arc::new(ManualClock::new(1_761_546_645_123));
    let ids = s.run_with(vec![job.clone()], on_clock(clock.clone()));
    assert_eq!(s.job(ids[0]).state, JobState::Succeeded);
    let out = out_dir(&s);
    let zip_path = out.with_file_name("20251027.zip");
    let first = std::fs::read(&zip_path).unwrap();
    assert_eq!(
        std::fs::metadata(&zip_path).unwrap().permissions().mode() & 0o777,
        0o640
    );
    let beside: Vec<String> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut beside = beside;
    beside.sort();
    assert_eq!(
        beside,
        ["20251027", "20251027.zip"],
        "no temporary file left"
    );

    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(first.clone())).unwrap();
    let mut names = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        assert_eq!(entry.compression(), zip::CompressionMethod::Deflated);
        assert_eq!(entry.unix_mode().map(|m| m & 0o777), Some(0o640));
        let t = entry.last_modified().unwrap();
        assert_eq!((t.year(), t.month(), t.day()), (1980, 1, 1));
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let name = entry.name().unwrap().to_string();
        assert_eq!(bytes, std::fs::read(out.join(&name)).unwrap(), "{name}");
        names.push(name);
    }
    assert_eq!(
        names,
        [
            "metadata.json",
            "manifest.csv",
            "orgs.csv",
            "users.csv",
            "roles.csv",
            "courses.csv",
            "classes.csv",
            "enrollments.csv",
            "academicSessions.csv"
        ],
        "the set at the zip root; demographics.csv has no records"
    );
    assert_eq!(
        last_detail(&s, ids[0])["archive"],
        zip_path.display().to_string()
    );

    s.run_with(vec![job.clone()], on_clock(clock.clone()));
    assert_eq!(first, std::fs::read(&zip_path).unwrap(), "byte-identical");
    // Another run time changes uploadedAt (bulk files carry no dateLastModified).
    clock.advance(Duration::from_secs(1));
    s.run_with(vec![job], on_clock(clock));
    assert_ne!(first, std::fs::read(&zip_path).unwrap());
    assert!(server.seen().is_empty(), "no endpoint, no upload");
}

#[test]
fn oneroster_on_error_skip_leaves_bad_rows_out_everywhere_and_goes_on() {
    let server = Server::start(|_| 202);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    std::fs::write(
        dir.join("Student.csv"),
        "SIS ID,School SIS ID,First Name,Last Name,Username\nS1,1,太郎,山田,taro@example.jp\nS2,7,花子,佐藤,\n",
    )
    .unwrap();
    let ids = s.run(vec![job_with(&dir, json!({"on_error": "skip"}))]);
    let job = s.job(ids[0]);
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.last_error);
    let out = out_dir(&s);
    let (_, users) = read_csv(&out.join("users.csv"));
    let sis: Vec<&str> = users.iter().map(|u| u[9].as_str()).collect();
    assert_eq!(
        sis,
        ["S1", "T1"],
        "the student of an unknown school is left out"
    );
    let (_, errors) = read_csv(&out.join("errors.csv"));
    let reported: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e[0].as_str(), e[3].as_str()))
        .collect();
    assert_eq!(
        reported,
        [
            ("Student.csv", "7"),
            ("StudentEnrollment.csv", "SEC9"),
            ("StudentEnrollment.csv", "S2")
        ]
    );
    assert_eq!(last_detail(&s, ids[0])["errors"], 3);
    assert_eq!(s.jobs_of("http")[0].state, JobState::Succeeded);
}

#[test]
fn oneroster_on_error_fail_makes_an_optional_file_error_fatal() {
    let server = Server::start(|_| 202);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    // The fixture's only error is the enrollment in a missing section (optional file).
    let ids = s.run(vec![job_with(&dir, json!({"on_error": "fail"}))]);
    let job = s.job(ids[0]);
    assert_eq!(job.state, JobState::Dead);
    assert_eq!(job.attempts, 1);
    let error = job.last_error.unwrap();
    assert!(
        error.starts_with(
            "1 error(s) with on_error = \"fail\" (first: StudentEnrollment.csv line 3 Section SIS ID: no such section in Section.csv)"
        ),
        "{error}"
    );
    let left: Vec<String> = std::fs::read_dir(out_dir(&s))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["errors.csv"]);
    assert!(s.jobs_of("http").is_empty());

    // The default goes on with the same input.
    let ids = s.run(vec![job_for(&dir)]);
    assert_eq!(s.job(ids[0]).state, JobState::Succeeded);
}

#[test]
fn oneroster_an_upload_answer_without_an_upload_id_starts_no_status_poll() {
    let server = Server::answering(|_, _| (200, "{\"status\":\"ok\"}".into()));
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    s.run(vec![job_with(&dir, json!({"status_poll": true}))]);
    let upload = &s.jobs_of("http")[0];
    assert_eq!(upload.state, JobState::Succeeded);
    let detail = last_detail(&s, upload.id);
    assert_eq!(detail["recorded"], json!({}));
    assert_eq!(
        detail["follow_up"],
        "no follow-up: the answer has no uploadId (JSON)"
    );
    assert!(s.jobs_of("oneroster_status").is_empty());
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn oneroster_a_zero_byte_optional_file_is_an_empty_one() {
    let server = Server::start(|_| 202);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    std::fs::write(dir.join("StudentEnrollment.csv"), "").unwrap();
    let ids = s.run(vec![job_for(&dir)]);
    let job = s.job(ids[0]);
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.last_error);
    let out = out_dir(&s);
    let (_, enrollments) = read_csv(&out.join("enrollments.csv"));
    let roles: Vec<&str> = enrollments.iter().map(|r| r[6].as_str()).collect();
    assert_eq!(roles, ["teacher", "teacher"], "only the roster's rows");
    assert!(
        !out.join("errors.csv").exists(),
        "no error: the file is empty, not broken"
    );
    assert_eq!(last_detail(&s, ids[0])["errors"], 0);
    assert_eq!(s.jobs_of("http")[0].state, JobState::Succeeded);

    // Both optional enrollment files empty: enrollments.csv has no rows, so it is absent.
    std::fs::write(dir.join("teacherroster.csv"), "Section SIS ID,SIS ID\n").unwrap();
    s.run(vec![job_for(&dir)]);
    let out = out_dir(&s);
    assert!(!out.join("enrollments.csv").exists());
    let (_, manifest) = read_csv(&out.join("manifest.csv"));
    assert!(manifest.contains(&vec!["file.enrollments".to_string(), "absent".into()]));
}

#[test]
fn oneroster_a_dead_conversion_always_leaves_errors_csv() {
    let server = Server::start(|_| 202);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    // A required file of 0 bytes cannot be read: fatal, and reported.
    std::fs::write(dir.join("School.csv"), "").unwrap();
    let ids = s.run(vec![job_for(&dir)]);
    let job = s.job(ids[0]);
    assert_eq!(job.state, JobState::Dead);
    let error = job.last_error.unwrap();
    assert!(
        error.starts_with("School.csv: not a CSV file: the file is empty; see "),
        "{error}"
    );
    assert!(error.ends_with("errors.csv"), "{error}");
    let out = out_dir(&s);
    assert_eq!(
        names_in(&out),
        ["errors.csv"],
        "no OneRoster file, no temp file"
    );
    let (h, errors) = read_csv(&out.join("errors.csv"));
    assert_eq!(h, ["file", "line", "field", "value", "reason"]);
    assert_eq!(
        errors,
        [[
            "School.csv",
            "",
            "",
            "",
            "not a CSV file: the file is empty"
        ]]
    );
    assert!(s.jobs_of("http").is_empty());

    // A missing required file too.
    std::fs::remove_file(dir.join("School.csv")).unwrap();
    let ids = s.run(vec![job_for(&dir)]);
    assert_eq!(s.job(ids[0]).state, JobState::Dead);
    let (_, errors) = read_csv(&out.join("errors.csv"));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0][0], "school.csv");
    assert!(errors[0][4].starts_with("is missing in "), "{errors:?}");
}

#[test]
fn oneroster_seed_enrollment_ids_match_the_former_formula_and_collisions_are_reported() {
    let server = Server::start(|_| 202);
    let s = setup(&server);
    let dir = write_fixture(&s.data(), "spool/sds/20251027");
    let ids = s.run(vec![job_with(&dir, json!({"enrollment_ids": "seed"}))]);
    assert_eq!(s.job(ids[0]).state, JobState::Succeeded);
    let out = out_dir(&s);
    let (_, rows) = read_csv(&out.join("enrollments.csv"));
    let got: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str(), r[7].as_str()))
        .collect();
    let (a, b, c) = (
        id("enrollment", "SEC1:S1"),
        id("enrollment", "SEC1:T1"),
        id("enrollment", "SEC2:T1"),
    );
    assert_eq!(
        got,
        [
            (a.as_str(), "false"),
            (b.as_str(), "true"),
            (c.as_str(), "true")
        ]
    );
    // The users they point at keep their ids.
    assert_eq!(rows[0][5], id("student", "S1"));
    assert_eq!(rows[1][5], id("teacher", "T1"));

    // A teacher whose SIS ID is a student's, in that student's section: the seed formula
    // gives both one id, so the second is reported and left out; "role" keeps both.
    std::fs::write(
        dir.join("Teacher.csv"),
        "SIS ID,School SIS ID,First Name,Last Name\nT1,1,一郎,鈴木\nS1,1,次郎,田中\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("teacherroster.csv"),
        "Section SIS ID,SIS ID\nSEC1,S1\n",
    )
    .unwrap();
    let ids = s.run(vec![job_with(&dir, json!({"enrollment_ids": "seed"}))]);
    assert_eq!(s.job(ids[0]).state, JobState::Succeeded);
    let (_, rows) = read_csv(&out.join("enrollments.csv"));
    assert_eq!(rows.len(), 1);
    let (_, errors) = read_csv(&out.join("errors.csv"));
    let collision = errors.iter().find(|e| e[0] == "teacherroster.csv").unwrap();
    assert_eq!(collision[1..4], ["2", "SIS ID", "S1"]);
    assert!(
        collision[4].starts_with("enrollment id collides with the student S1"),
        "{collision:?}"
    );
    let ids = s.run(vec![job_with(&dir, json!({"enrollment_ids": "role"}))]);
    assert_eq!(s.job(ids[0]).state, JobState::Succeeded);
    let (_, rows) = read_csv(&out.join("enrollments.csv"));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][0], id("enrollment", "SEC1:teacher:S1"));
}
