//! Reading and validating the SDS v1 CSVs, and mapping them to OneRoster 1.2 rows.

use crate::csvio::{encoding_for_label, CsvReader, Dialect, EncodingChoice, Record};
use crate::files::FileError;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// One problem found in an input file, as written to `errors.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsError {
    pub file: String,
    pub line: u64,
    pub field: String,
    pub value: String,
    pub reason: String,
    /// Whether the file is one of the required ones (then the job is dead).
    pub required: bool,
}

/// One record of an input file, with its columns by header name.
pub struct RowView<'r> {
    pub line: u64,
    cols: &'r HashMap<String, usize>,
    rec: &'r Record<'r>,
}

impl RowView<'_> {
    /// The trimmed value of `col` ("" when the column or the field is absent).
    pub fn get(&self, col: &str) -> &str {
        self.cols
            .get(col)
            .and_then(|&i| self.rec.text(i))
            .map(str::trim)
            .unwrap_or("")
    }
}

/// A problem that stops the conversion: a file that cannot be read as CSV, or an
/// output that cannot be written. `file` is the input's name as on disk ("" for an
/// output), `line` 0 when it concerns the file as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

impl Fatal {
    pub fn output(reason: String) -> Fatal {
        Fatal {
            file: String::new(),
            line: 0,
            reason,
        }
    }
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.file.is_empty(), self.line) {
            (true, _) => write!(f, "{}", self.reason),
            (false, 0) => write!(f, "{}: {}", self.file, self.reason),
            (false, line) => write!(f, "{} line {line}: {}", self.file, self.reason),
        }
    }
}

/// The name of an input file as it is on disk (`TeacherRoster.csv`), for errors.
pub fn disk_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Streams one SDS file through `f` with the shared reader (UTF-8 with or without BOM,
/// else Shift_JIS). A missing required column is one error and no row is read; a record
/// with invalid bytes is an error and skipped. An optional file of 0 bytes has no rows,
/// like one with only its header.
pub fn for_each_row(
    path: &Path,
    required: bool,
    required_cols: &[&str],
    errors: &mut Vec<SdsError>,
    mut f: impl FnMut(&RowView<'_>, &mut Check<'_>) -> Result<(), FileError>,
) -> Result<(), Fatal> {
    let file = disk_name(path);
    let fatal = |line: u64, reason: String| Fatal {
        file: file.clone(),
        line,
        reason,
    };
    if !required && std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
        return Ok(());
    }
    let fallback = encoding_for_label("shift_jis").map_err(|e| fatal(0, e))?;
    let mut reader = CsvReader::open(path, EncodingChoice::Auto { fallback }, &Dialect::default())
        .map_err(|e| fatal(0, e.to_string()))?;
    let mut cols: HashMap<String, usize> = HashMap::new();
    for (i, h) in reader.headers().unwrap_or_default().iter().enumerate() {
        cols.entry(h.clone()).or_insert(i);
    }
    let mut check = Check {
        file: &file,
        required,
        errors,
    };
    let mut missing = false;
    for col in required_cols {
        if !cols.contains_key(*col) {
            check.push(1, col, "", "missing column");
            missing = true;
        }
    }
    if missing {
        return Ok(());
    }
    while let Some(record) = reader.next_record().map_err(|e| fatal(0, e.to_string()))? {
        if let Some(problem) = &record.problem {
            check.push(record.line, "", "", problem);
            continue;
        }
        let view = RowView {
            line: record.line,
            cols: &cols,
            rec: &record,
        };
        f(&view, &mut check).map_err(|e| Fatal::output(e.to_string()))?;
    }
    Ok(())
}

/// Where the SDS files are; the optional ones may be absent.
pub struct Inputs {
    pub school: PathBuf,
    pub student: PathBuf,
    pub teacher: PathBuf,
    pub section: Option<PathBuf>,
    pub studentenrollment: Option<PathBuf>,
    pub teacherroster: Option<PathBuf>,
}

/// The OneRoster files written while converting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Out {
    Orgs,
    Users,
    Roles,
    Courses,
    Classes,
    Enrollments,
    AcademicSessions,
}

/// Receives the rows of each output file, in input order.
pub trait Sink {
    fn row(&mut self, out: Out, fields: &[&str]) -> Result<(), FileError>;
}

pub const ORGS: &[&str] = &[
    "sourcedId",
    "status",
    "dateLastModified",
    "name",
    "type",
    "identifier",
    "parentSourcedId",
];
pub const USERS: &[&str] = &[
    "sourcedId",
    "status",
    "dateLastModified",
    "enabledUser",
    "username",
    "userIds",
    "givenName",
    "familyName",
    "middleName",
    "identifier",
    "email",
    "sms",
    "phone",
    "agentSourcedIds",
    "grades",
    "password",
    "userMasterIdentifier",
    "preferredGivenName",
    "preferredMiddleName",
    "preferredFamilyName",
    "primaryOrgSourcedId",
    "pronouns",
];
pub const ROLES: &[&str] = &[
    "sourcedId",
    "status",
    "dateLastModified",
    "userSourcedId",
    "roleType",
    "role",
    "beginDate",
    "endDate",
    "orgSourcedId",
    "userProfileSourcedId",
];
pub const COURSES: &[&str] = &[
    "sourcedId",
    "status",
    "dateLastModified",
    "schoolYearSourcedId",
    "title",
    "courseCode",
    "grades",
    "orgSourcedId",
    "subjects",
    "subjectCodes",
];
pub const CLASSES: &[&str] = &[
    "sourcedId",
    "status",
    "dateLastModified",
    "title",
    "grades",
    "courseSourcedId",
    "classCode",
    "classType",
    "location",
    "schoolSourcedId",
    "termSourcedIds",
    "subjects",
    "subjectCodes",
    "periods",
];
pub const ENROLLMENTS: &[&str] = &[
    "sourcedId",
    "status",
    "dateLastModified",
    "classSourcedId",
    "schoolSourcedId",
    "userSourcedId",
    "role",
    "primary",
    "beginDate",
    "endDate",
];
pub const ACADEMIC_SESSIONS: &[&str] = &[
    "sourcedId",
    "status",
    "dateLastModified",
    "title",
    "type",
    "startDate",
    "endDate",
    "parentSourcedId",
    "schoolYear",
];
pub const DEMOGRAPHICS: &[&str] = &[
    "sourcedId",
    "status",
    "dateLastModified",
    "birthDate",
    "sex",
    "americanIndianOrAlaskaNative",
    "asian",
    "blackOrAfricanAmerican",
    "nativeHawaiianOrOtherPacificIslander",
    "white",
    "demographicRaceTwoOrMoreRaces",
    "hispanicOrLatinoEthnicity",
    "countryOfBirthCode",
    "stateOfBirthAbbreviation",
    "cityOfBirth",
    "publicSchoolResidenceStatus",
];

/// How enrollment sourcedIds are made (UUIDv5 in the namespace, like every id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollmentIds {
    /// `enrollment:{section}:{role}:{sis id}`: a student and a teacher who share a SIS
    /// ID in one section still get two ids.
    Role,
    /// `enrollment:{section}:{sis id}`, the former system's formula, so its enrollment
    /// ids stay the same; a student and a teacher with the same SIS ID in one section
    /// would share an id, so the second is reported and left out.
    Seed,
}

impl EnrollmentIds {
    pub fn id(self, ns: &Uuid, section: &str, role: &str, sis: &str) -> Uuid {
        let name = match self {
            EnrollmentIds::Role => format!("enrollment:{section}:{role}:{sis}"),
            EnrollmentIds::Seed => format!("enrollment:{section}:{sis}"),
        };
        Uuid::new_v5(ns, name.as_bytes())
    }
}

/// The sourcedId of an SDS entity: UUIDv5 of `"{entity}:{sis id}"` in `ns`.
pub fn sourced_id(ns: &Uuid, entity: &str, id: &str) -> String {
    Uuid::new_v5(ns, format!("{entity}:{id}").as_bytes()).to_string()
}

/// A plain check for an email address: one `@`, a local part, a dotted domain, no
/// spaces.
pub fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// `YYYY-MM-DD` or `YYYYMMDD` as `YYYY-MM-DD`.
fn date(s: &str) -> Option<String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .or_else(|_| chrono::NaiveDate::parse_from_str(s, "%Y%m%d"))
        .ok()
        .map(|d| d.format("%Y-%m-%d").to_string())
}

/// Records the errors of one file.
pub struct Check<'a> {
    file: &'a str,
    required: bool,
    errors: &'a mut Vec<SdsError>,
}

impl Check<'_> {
    fn push(&mut self, line: u64, field: &str, value: &str, reason: impl Into<String>) {
        self.errors.push(SdsError {
            file: self.file.to_string(),
            line,
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
            required: self.required,
        });
    }

    pub fn fail(&mut self, row: &RowView<'_>, field: &str, value: &str, reason: impl Into<String>) {
        self.push(row.line, field, value, reason);
    }

    /// Records an error for each empty field of `cols`; true when none is empty.
    fn present(&mut self, row: &RowView<'_>, cols: &[&str]) -> bool {
        let mut ok = true;
        for col in cols {
            if row.get(col).is_empty() {
                self.fail(row, col, "", "required field is empty");
                ok = false;
            }
        }
        ok
    }
}

const PERSON_REQUIRED: &[&str] = &["SIS ID", "School SIS ID", "First Name", "Last Name"];

/// What the conversion counted.
#[derive(Debug, Default)]
pub struct Counts {
    pub schools: usize,
    pub students: usize,
    pub teachers: usize,
    pub sections: usize,
}

/// Validates and maps, streaming each input file once, in dependency order. Rows with
/// an error are left out and reported in `errors`.
pub fn convert(
    input: &Inputs,
    ns: &Uuid,
    enrollment_ids: EnrollmentIds,
    errors: &mut Vec<SdsError>,
    sink: &mut dyn Sink,
) -> Result<Counts, Fatal> {
    // A bulk set leaves status and dateLastModified blank: "In BULK processing, the CSV
    // files MUST NOT contain values in the dateLastModified and status fields" (1.2 CSV
    // binding, section 3).
    let (active, now) = ("", "");
    let school_file = disk_name(&input.school);

    // school.csv -> orgs
    let mut schools: HashSet<String> = HashSet::new();
    for_each_row(
        &input.school,
        true,
        &["SIS ID", "Name"],
        errors,
        |row, c| {
            if !c.present(row, &["SIS ID", "Name"]) {
                return Ok(());
            }
            let sis = row.get("SIS ID");
            if !schools.insert(sis.to_string()) {
                c.fail(row, "SIS ID", sis, "duplicate SIS ID");
                return Ok(());
            }
            let id = sourced_id(ns, "school", sis);
            sink.row(
                Out::Orgs,
                &[&id, active, now, row.get("Name"), "school", sis, ""],
            )
        },
    )?;

    // student.csv, teacher.csv -> users + roles
    let mut people: [HashSet<String>; 2] = [HashSet::new(), HashSet::new()];
    for (k, (path, entity)) in [(&input.student, "student"), (&input.teacher, "teacher")]
        .into_iter()
        .enumerate()
    {
        let seen = &mut people[k];
        for_each_row(
            path,
            true,
            &["SIS ID", "School SIS ID"],
            errors,
            |row, c| {
                if !c.present(row, PERSON_REQUIRED) {
                    return Ok(());
                }
                let sis = row.get("SIS ID");
                let school = row.get("School SIS ID");
                let username = row.get("Username");
                let mut ok = true;
                if !username.is_empty() && !is_email(username) {
                    c.fail(row, "Username", username, "not an email address");
                    ok = false;
                }
                if !schools.contains(school) {
                    c.fail(
                        row,
                        "School SIS ID",
                        school,
                        format!("no such school in {school_file}"),
                    );
                    ok = false;
                }
                if ok && !seen.insert(sis.to_string()) {
                    c.fail(row, "SIS ID", sis, "duplicate SIS ID");
                    ok = false;
                }
                if !ok {
                    return Ok(());
                }
                let user_id = sourced_id(ns, entity, sis);
                let org_id = sourced_id(ns, "school", school);
                let phone = row.get("Phone");
                let grades = if entity == "student" {
                    row.get("Grade")
                } else {
                    ""
                };
                let user_ids = format!("{{SIS:{sis}}}");
                sink.row(
                    Out::Users,
                    &[
                        &user_id,
                        active,
                        now,
                        "true",
                        if username.is_empty() { sis } else { username },
                        &user_ids,
                        row.get("First Name"),
                        row.get("Last Name"),
                        row.get("Middle Name"),
                        sis,
                        username,
                        phone,
                        phone,
                        "",
                        grades,
                        "",
                        "",
                        "",
                        "",
                        "",
                        &org_id,
                        "",
                    ],
                )?;
                let role_id = sourced_id(ns, "role", &format!("{entity}:{sis}:{school}"));
                sink.row(
                    Out::Roles,
                    &[
                        &role_id, active, now, &user_id, "primary", entity, "", "", &org_id, "",
                    ],
                )
            },
        )?;
    }

    // section.csv -> courses, classes, academicSessions
    let mut sections: HashMap<String, String> = HashMap::new(); // section -> school
    if let Some(path) = &input.section {
        let mut courses: HashSet<String> = HashSet::new();
        let mut terms: HashSet<String> = HashSet::new();
        let cols = ["SIS ID", "School SIS ID", "Section Name"];
        for_each_row(path, false, &cols, errors, |row, c| {
            if !c.present(row, &cols) {
                return Ok(());
            }
            let sis = row.get("SIS ID");
            let school = row.get("School SIS ID");
            let mut ok = true;
            if !schools.contains(school) {
                c.fail(
                    row,
                    "School SIS ID",
                    school,
                    format!("no such school in {school_file}"),
                );
                ok = false;
            }
            let term = row.get("Term SIS ID");
            let mut dates = [String::new(), String::new()];
            for (i, col) in ["Term StartDate", "Term EndDate"].iter().enumerate() {
                let v = row.get(col);
                if v.is_empty() {
                    continue;
                }
                match date(v) {
                    Some(d) => dates[i] = d,
                    None => {
                        c.fail(row, col, v, "not a date (YYYY-MM-DD or YYYYMMDD)");
                        ok = false;
                    }
                }
            }
            if ok && sections.contains_key(sis) {
                c.fail(row, "SIS ID", sis, "duplicate SIS ID");
                ok = false;
            }
            if !ok {
                return Ok(());
            }
            sections.insert(sis.to_string(), school.to_string());
            let course_sis = match row.get("Course SIS ID") {
                "" => sis,
                id => id,
            };
            let school_id = sourced_id(ns, "school", school);
            let subject = row.get("Course Subject");
            let course_id = sourced_id(ns, "course", course_sis);
            if courses.insert(course_sis.to_string()) {
                let title = match row.get("Course Name") {
                    "" => row.get("Section Name"),
                    name => name,
                };
                sink.row(
                    Out::Courses,
                    &[
                        &course_id,
                        active,
                        now,
                        "",
                        title,
                        row.get("Course Number"),
                        "",
                        &school_id,
                        subject,
                        "",
                    ],
                )?;
            }
            let term_id = if term.is_empty() {
                String::new()
            } else {
                sourced_id(ns, "term", term)
            };
            if !term.is_empty() && terms.insert(term.to_string()) {
                let title = match row.get("Term Name") {
                    "" => term,
                    name => name,
                };
                let school_year = dates[1].get(..4).unwrap_or_default();
                sink.row(
                    Out::AcademicSessions,
                    &[
                        &term_id,
                        active,
                        now,
                        title,
                        "term",
                        &dates[0],
                        &dates[1],
                        "",
                        school_year,
                    ],
                )?;
            }
            let class_id = sourced_id(ns, "class", sis);
            sink.row(
                Out::Classes,
                &[
                    &class_id,
                    active,
                    now,
                    row.get("Section Name"),
                    "",
                    &course_id,
                    row.get("Section Number"),
                    "scheduled",
                    "",
                    &school_id,
                    &term_id,
                    subject,
                    "",
                    row.get("Periods"),
                ],
            )
        })?;
    }

    // studentenrollment.csv, teacherroster.csv -> enrollments
    let section_file = input
        .section
        .as_deref()
        .map(disk_name)
        .unwrap_or_else(|| "section.csv".into());
    let people_files = [disk_name(&input.student), disk_name(&input.teacher)];
    // Each enrollment id, with the role it was made for.
    let mut enrolled: HashMap<Uuid, &str> = HashMap::new();
    for (k, path, entity) in [
        (0, &input.studentenrollment, "student"),
        (1, &input.teacherroster, "teacher"),
    ] {
        let Some(path) = path else { continue };
        let people_file = &people_files[k];
        let cols = ["Section SIS ID", "SIS ID"];
        let known = &people[k];
        for_each_row(path, false, &cols, errors, |row, c| {
            if !c.present(row, &cols) {
                return Ok(());
            }
            let section = row.get("Section SIS ID");
            let sis = row.get("SIS ID");
            let mut ok = true;
            let school = sections.get(section);
            if school.is_none() {
                c.fail(
                    row,
                    "Section SIS ID",
                    section,
                    format!("no such section in {section_file}"),
                );
                ok = false;
            }
            if !known.contains(sis) {
                c.fail(
                    row,
                    "SIS ID",
                    sis,
                    format!("no such {entity} in {people_file}"),
                );
                ok = false;
            }
            let (true, Some(school)) = (ok, school) else {
                return Ok(());
            };
            let id = enrollment_ids.id(ns, section, entity, sis);
            match enrolled.insert(id, entity) {
                None => {}
                Some(earlier) if earlier == entity => {
                    c.fail(row, "SIS ID", sis, "duplicate enrollment");
                    return Ok(());
                }
                Some(earlier) => {
                    // Only the seed scheme can get here: its ids leave the role out.
                    c.fail(
                        row,
                        "SIS ID",
                        sis,
                        format!(
                            "enrollment id collides with the {earlier} {sis} in the same \
                             section (enrollment_ids = \"seed\" leaves the role out of the \
                             id; \"role\" keeps them apart)"
                        ),
                    );
                    return Ok(());
                }
            }
            sink.row(
                Out::Enrollments,
                &[
                    &id.to_string(),
                    active,
                    now,
                    &sourced_id(ns, "class", section),
                    &sourced_id(ns, "school", school),
                    &sourced_id(ns, entity, sis),
                    entity,
                    // `primary` marks a class's primary teacher (1.2: "Applicable only
                    // to teachers"); it means nothing for a student.
                    if entity == "teacher" { "true" } else { "false" },
                    "",
                    "",
                ],
            )
        })?;
    }
    Ok(Counts {
        schools: schools.len(),
        students: people[0].len(),
        teachers: people[1].len(),
        sections: sections.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(is_email("taro@example.jp"));
        assert!(!is_email("taro"));
        assert!(!is_email("taro@example"));
        assert!(!is_email("ta ro@example.jp"));
        assert!(!is_email("@example.jp"));
    }

    #[test]
    fn ids_are_uuid_v5_in_the_namespace() {
        let id = sourced_id(&Uuid::NAMESPACE_DNS, "school", "12345");
        assert_eq!(
            id,
            Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"school:12345").to_string()
        );
        assert_eq!(id.as_bytes()[14], b'5');
    }

    #[test]
    fn dates() {
        assert_eq!(date("20250401").as_deref(), Some("2025-04-01"));
        assert_eq!(date("2025-04-01").as_deref(), Some("2025-04-01"));
        assert_eq!(date("April"), None);
    }
}
