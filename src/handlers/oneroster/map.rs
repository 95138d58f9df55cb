//! Reading and validating the SDS v1 CSVs, and mapping them to OneRoster 1.2 rows.

use crate::csvio::{encoding_for_label, CsvReader, Dialect, EncodingChoice};
use std::collections::{HashMap, HashSet};
use std::path::Path;
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

/// One record of an input file.
pub struct Row {
    pub line: u64,
    fields: Vec<String>,
}

/// An input file read whole: its columns by header name and its records.
pub struct Table {
    pub file: String,
    pub required: bool,
    cols: HashMap<String, usize>,
    pub rows: Vec<Row>,
}

impl Table {
    fn empty(file: &str, required: bool) -> Table {
        Table {
            file: file.to_string(),
            required,
            cols: HashMap::new(),
            rows: Vec::new(),
        }
    }

    /// The trimmed value of `col` in `row` ("" when the column or the field is absent).
    pub fn get<'a>(&self, row: &'a Row, col: &str) -> &'a str {
        self.cols
            .get(col)
            .and_then(|&i| row.fields.get(i))
            .map(|s| s.trim())
            .unwrap_or("")
    }
}

/// Reads one SDS file with the shared reader (UTF-8 with or without BOM, else
/// Shift_JIS). A missing required column is one error and leaves the table empty.
pub fn read_table(
    path: &Path,
    file: &str,
    required: bool,
    required_cols: &[&str],
    errors: &mut Vec<SdsError>,
) -> Result<Table, String> {
    let fallback = encoding_for_label("shift_jis")?;
    let mut reader = CsvReader::open(path, EncodingChoice::Auto { fallback }, &Dialect::default())
        .map_err(|e| format!("{file}: {e}"))?;
    let headers: Vec<String> = reader.headers().unwrap_or_default().to_vec();
    let mut table = Table::empty(file, required);
    for (i, h) in headers.iter().enumerate() {
        table.cols.entry(h.clone()).or_insert(i);
    }
    let missing: Vec<&str> = required_cols
        .iter()
        .filter(|c| !table.cols.contains_key(**c))
        .copied()
        .collect();
    for col in &missing {
        errors.push(SdsError {
            file: file.to_string(),
            line: 1,
            field: col.to_string(),
            value: String::new(),
            reason: "missing column".into(),
            required,
        });
    }
    if !missing.is_empty() {
        table.cols.clear();
        return Ok(table);
    }
    while let Some(record) = reader.next_record().map_err(|e| format!("{file}: {e}"))? {
        if let Some(problem) = &record.problem {
            errors.push(SdsError {
                file: file.to_string(),
                line: record.line,
                field: String::new(),
                value: String::new(),
                reason: problem.clone(),
                required,
            });
            continue;
        }
        let fields = (0..record.len())
            .map(|i| record.text(i).unwrap_or_default().to_string())
            .collect();
        table.rows.push(Row {
            line: record.line,
            fields,
        });
    }
    Ok(table)
}

/// The SDS input set; the optional files may be absent.
pub struct Inputs {
    pub school: Table,
    pub student: Table,
    pub teacher: Table,
    pub section: Option<Table>,
    pub studentenrollment: Option<Table>,
    pub teacherroster: Option<Table>,
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

/// The OneRoster rows of every file, in input order.
#[derive(Debug, Default)]
pub struct Converted {
    pub orgs: Vec<Vec<String>>,
    pub users: Vec<Vec<String>>,
    pub roles: Vec<Vec<String>>,
    pub courses: Vec<Vec<String>>,
    pub classes: Vec<Vec<String>>,
    pub enrollments: Vec<Vec<String>>,
    pub academic_sessions: Vec<Vec<String>>,
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

struct Check<'a> {
    table: &'a Table,
    errors: &'a mut Vec<SdsError>,
}

impl Check<'_> {
    fn fail(&mut self, row: &Row, field: &str, value: &str, reason: impl Into<String>) {
        self.errors.push(SdsError {
            file: self.table.file.clone(),
            line: row.line,
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
            required: self.table.required,
        });
    }

    /// Records an error for each empty field of `cols`; true when none is empty.
    fn present(&mut self, row: &Row, cols: &[&str]) -> bool {
        let mut ok = true;
        for col in cols {
            if self.table.get(row, col).is_empty() {
                self.fail(row, col, "", "required field is empty");
                ok = false;
            }
        }
        ok
    }
}

const PERSON_REQUIRED: &[&str] = &["SIS ID", "School SIS ID", "First Name", "Last Name"];

/// Validates and maps. Rows with an error are left out and reported in `errors`.
pub fn convert(input: &Inputs, ns: &Uuid, now: &str, errors: &mut Vec<SdsError>) -> Converted {
    let mut out = Converted::default();
    let active = "active".to_string();
    let now = now.to_string();

    // school.csv -> orgs
    let mut schools: HashSet<String> = HashSet::new();
    {
        let t = &input.school;
        let mut c = Check { table: t, errors };
        for row in &t.rows {
            if !c.present(row, &["SIS ID", "Name"]) {
                continue;
            }
            let sis = t.get(row, "SIS ID");
            if !schools.insert(sis.to_string()) {
                c.fail(row, "SIS ID", sis, "duplicate SIS ID");
                continue;
            }
            out.orgs.push(vec![
                sourced_id(ns, "school", sis),
                active.clone(),
                now.clone(),
                t.get(row, "Name").to_string(),
                "school".into(),
                sis.to_string(),
                String::new(),
            ]);
        }
    }

    // student.csv, teacher.csv -> users + roles
    let mut people: [HashSet<String>; 2] = [HashSet::new(), HashSet::new()];
    for (k, (t, entity)) in [(&input.student, "student"), (&input.teacher, "teacher")]
        .into_iter()
        .enumerate()
    {
        let mut c = Check { table: t, errors };
        for row in &t.rows {
            if !c.present(row, PERSON_REQUIRED) {
                continue;
            }
            let sis = t.get(row, "SIS ID");
            let school = t.get(row, "School SIS ID");
            let username = t.get(row, "Username");
            let mut ok = true;
            if !username.is_empty() && !is_email(username) {
                c.fail(row, "Username", username, "not an email address");
                ok = false;
            }
            if !schools.contains(school) {
                c.fail(row, "School SIS ID", school, "no such school in school.csv");
                ok = false;
            }
            if ok && !people[k].insert(sis.to_string()) {
                c.fail(row, "SIS ID", sis, "duplicate SIS ID");
                ok = false;
            }
            if !ok {
                continue;
            }
            let user_id = sourced_id(ns, entity, sis);
            let org_id = sourced_id(ns, "school", school);
            let phone = t.get(row, "Phone").to_string();
            let grades = if entity == "student" {
                t.get(row, "Grade").to_string()
            } else {
                String::new()
            };
            out.users.push(vec![
                user_id.clone(),
                active.clone(),
                now.clone(),
                "true".into(),
                if username.is_empty() { sis } else { username }.to_string(),
                format!("{{SIS:{sis}}}"),
                t.get(row, "First Name").to_string(),
                t.get(row, "Last Name").to_string(),
                t.get(row, "Middle Name").to_string(),
                sis.to_string(),
                username.to_string(),
                phone.clone(),
                phone,
                String::new(),
                grades,
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                org_id.clone(),
                String::new(),
            ]);
            out.roles.push(vec![
                sourced_id(ns, "role", &format!("{entity}:{sis}:{school}")),
                active.clone(),
                now.clone(),
                user_id,
                "primary".into(),
                entity.into(),
                String::new(),
                String::new(),
                org_id,
                String::new(),
            ]);
        }
    }

    // section.csv -> courses, classes, academicSessions
    let mut sections: HashMap<String, String> = HashMap::new(); // section -> school
    if let Some(t) = &input.section {
        let mut c = Check { table: t, errors };
        let mut courses: HashSet<String> = HashSet::new();
        let mut terms: HashSet<String> = HashSet::new();
        for row in &t.rows {
            if !c.present(row, &["SIS ID", "School SIS ID", "Section Name"]) {
                continue;
            }
            let sis = t.get(row, "SIS ID");
            let school = t.get(row, "School SIS ID");
            let mut ok = true;
            if !schools.contains(school) {
                c.fail(row, "School SIS ID", school, "no such school in school.csv");
                ok = false;
            }
            let term = t.get(row, "Term SIS ID");
            let mut dates = [String::new(), String::new()];
            for (i, col) in ["Term StartDate", "Term EndDate"].iter().enumerate() {
                let v = t.get(row, col);
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
                continue;
            }
            sections.insert(sis.to_string(), school.to_string());
            let course_sis = match t.get(row, "Course SIS ID") {
                "" => sis,
                id => id,
            };
            let school_id = sourced_id(ns, "school", school);
            let subject = t.get(row, "Course Subject").to_string();
            let course_id = sourced_id(ns, "course", course_sis);
            if courses.insert(course_sis.to_string()) {
                let title = match t.get(row, "Course Name") {
                    "" => t.get(row, "Section Name"),
                    name => name,
                };
                out.courses.push(vec![
                    course_id.clone(),
                    active.clone(),
                    now.clone(),
                    String::new(),
                    title.to_string(),
                    t.get(row, "Course Number").to_string(),
                    String::new(),
                    school_id.clone(),
                    subject.clone(),
                    String::new(),
                ]);
            }
            let term_id = if term.is_empty() {
                String::new()
            } else {
                sourced_id(ns, "term", term)
            };
            if !term.is_empty() && terms.insert(term.to_string()) {
                let title = match t.get(row, "Term Name") {
                    "" => term,
                    name => name,
                };
                let school_year = dates[1].get(..4).unwrap_or_default().to_string();
                out.academic_sessions.push(vec![
                    term_id.clone(),
                    active.clone(),
                    now.clone(),
                    title.to_string(),
                    "term".into(),
                    dates[0].clone(),
                    dates[1].clone(),
                    String::new(),
                    school_year,
                ]);
            }
            out.classes.push(vec![
                sourced_id(ns, "class", sis),
                active.clone(),
                now.clone(),
                t.get(row, "Section Name").to_string(),
                String::new(),
                course_id,
                t.get(row, "Section Number").to_string(),
                "scheduled".into(),
                String::new(),
                school_id,
                term_id,
                subject,
                String::new(),
                t.get(row, "Periods").to_string(),
            ]);
        }
    }

    // studentenrollment.csv, teacherroster.csv -> enrollments
    for (k, t, entity) in [
        (0, &input.studentenrollment, "student"),
        (1, &input.teacherroster, "teacher"),
    ] {
        let Some(t) = t else { continue };
        let mut c = Check { table: t, errors };
        let mut seen: HashSet<(String, String)> = HashSet::new();
        let people_file = format!("{entity}.csv");
        for row in &t.rows {
            if !c.present(row, &["Section SIS ID", "SIS ID"]) {
                continue;
            }
            let section = t.get(row, "Section SIS ID");
            let sis = t.get(row, "SIS ID");
            let mut ok = true;
            let school = sections.get(section);
            if school.is_none() {
                c.fail(
                    row,
                    "Section SIS ID",
                    section,
                    "no such section in section.csv",
                );
                ok = false;
            }
            if !people[k].contains(sis) {
                c.fail(
                    row,
                    "SIS ID",
                    sis,
                    format!("no such {entity} in {people_file}"),
                );
                ok = false;
            }
            if ok && !seen.insert((section.to_string(), sis.to_string())) {
                c.fail(row, "SIS ID", sis, "duplicate enrollment");
                ok = false;
            }
            let (true, Some(school)) = (ok, school) else {
                continue;
            };
            out.enrollments.push(vec![
                sourced_id(ns, "enrollment", &format!("{section}:{entity}:{sis}")),
                active.clone(),
                now.clone(),
                sourced_id(ns, "class", section),
                sourced_id(ns, "school", school),
                sourced_id(ns, entity, sis),
                entity.into(),
                if entity == "teacher" { "true" } else { "false" }.into(),
                String::new(),
                String::new(),
            ]);
        }
    }
    out
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
