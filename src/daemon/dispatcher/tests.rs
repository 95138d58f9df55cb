//! Unit tests of the dispatcher's phases on a manual clock and a real SQLite file.
