//! What validation finds wrong with a configuration: every problem, each naming its key,
//! collected into one list so an operator fixes them all in one go.

use std::fmt;

/// One thing wrong at one key (`endpoints.usage.burst: must be at least 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, as written in the file (`watch[2].pattern`); empty when a check
    /// gave only text.
    pub key: String,
    /// The sentence for people, which names the key.
    text: String,
}

impl Problem {
    /// `key: message`.
    pub fn new(key: impl Into<String>, message: impl fmt::Display) -> Problem {
        let key = key.into();
        let text = format!("{key}: {message}");
        Problem { key, text }
    }

    /// A problem whose sentence already names its key in its own words
    /// (`watch[0].queue "bad queue" contains ' '; ...`).
    pub fn sentence(key: impl Into<String>, text: impl Into<String>) -> Problem {
        Problem {
            key: key.into(),
            text: text.into(),
        }
    }

    /// A problem from a `key: message` text, as checks that stop at their first error
    /// write it (csv_import's pipeline compiler); a text without a key has none.
    pub fn from_keyed_text(text: &str) -> Problem {
        let key = match text.split_once(": ") {
            Some((key, _)) if !key.contains(' ') => key,
            _ => "",
        };
        Problem::sentence(key, text)
    }

    /// The sentence with `secret` replaced by `***` wherever it appears.
    pub fn masked(self, secret: &str) -> Problem {
        Problem {
            text: self.text.replace(secret, "***"),
            ..self
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Problem {}

/// Every problem found, in the order found. Its text joins them with "; ".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(Vec<Problem>);

impl Problems {
    pub fn new() -> Problems {
        Problems::default()
    }

    /// Records that `key` is wrong because of `message`.
    pub fn push(&mut self, key: impl Into<String>, message: impl fmt::Display) {
        self.0.push(Problem::new(key, message));
    }

    /// Records an already built problem (or anything that converts into one).
    pub fn add(&mut self, problem: impl Into<Problem>) {
        self.0.push(problem.into());
    }

    /// Records the error of `result`, if it is one.
    pub fn check<T, E: Into<Problem>>(&mut self, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.add(e);
                None
            }
        }
    }

    /// Records a problem at `key` unless `value` is a usable queue or kind name
    /// ([`crate::job::check_name`]).
    pub fn check_name(&mut self, key: &str, value: &str) {
        if let Err(e) = crate::job::check_name(key, value) {
            self.add(Problem::sentence(key, e.to_string()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Problem> {
        self.0.iter()
    }

    /// `Ok` when nothing was found, else every problem.
    pub fn into_result(self) -> Result<(), Problems> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl Extend<Problem> for Problems {
    fn extend<I: IntoIterator<Item = Problem>>(&mut self, iter: I) {
        self.0.extend(iter);
    }
}

impl IntoIterator for Problems {
    type Item = Problem;
    type IntoIter = std::vec::IntoIter<Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_kept_in_order_and_named_in_the_text() {
        let mut problems = Problems::new();
        assert!(problems.clone().into_result().is_ok());
        problems.push("daemon.workers", "must be at least 1");
        problems.check(Err::<(), _>(Problem::new(
            "socket.mode",
            "0666 is too open",
        )));
        assert_eq!(problems.check(Ok::<_, Problem>(3)), Some(3));
        assert_eq!(problems.len(), 2);
        assert_eq!(
            problems.to_string(),
            "daemon.workers: must be at least 1; socket.mode: 0666 is too open"
        );
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["daemon.workers", "socket.mode"]);
    }
}
