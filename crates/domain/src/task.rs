use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A task's identity: a UUID version 7, so that keys grow with time and B-tree inserts stay at the right-hand edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(Uuid);

impl TaskId {
    /// A fresh, time-ordered identifier.
    #[must_use]
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Wraps an identifier read back from storage. Any UUID is accepted there: rows written by the original .NET
    /// service carry version 4 identifiers and must stay addressable.
    #[must_use]
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    #[must_use]
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// Why a piece of text is not a task identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a UUID (expected the form 0190163d-8694-739b-aea5-966c26f8ad91)")]
pub struct TaskIdError {
    input: String,
}

impl FromStr for TaskId {
    type Err = TaskIdError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        Uuid::try_parse(input).map(Self).map_err(|_| TaskIdError {
            // Echoing a megabyte of garbage back into an error message helps nobody.
            input: input.chars().take(64).collect(),
        })
    }
}

/// A task's name: 1 to 255 characters (counted as PostgreSQL's `varchar(255)` counts them, in characters, not
/// bytes), not only white space, and free of control characters such as NUL, which PostgreSQL refuses to store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskName(String);

/// Why a string is not a valid task name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskNameError {
    #[error("the name is empty; give it 1 to {max} characters", max = TaskName::MAX_CHARS)]
    Empty,
    #[error("the name is only white space")]
    Blank,
    #[error("the name has {chars} characters; at most {max} are allowed", max = TaskName::MAX_CHARS)]
    TooLong { chars: usize },
    #[error("the name contains the control character U+{code_point:04X} at character {position}")]
    ControlCharacter { code_point: u32, position: usize },
}

impl TaskName {
    /// The longest name, in characters: the width of the `name` column.
    pub const MAX_CHARS: usize = 255;

    /// The rules other than length as a regular expression in the dialect of JSON Schema and OpenAPI (ECMA-262, which
    /// the `regex` crate reads the same way here): no control character (Unicode category Cc) anywhere, and at least
    /// one character that is neither a control character nor white space (Unicode's `White_Space`, as
    /// [`char::is_whitespace`] reads it). The classes are spelled out rather than written `\s`, because `\s` means a
    /// different set in each dialect. Length is left to JSON Schema's `minLength` and `maxLength`, which count code
    /// points as [`TaskName::MAX_CHARS`] does.
    pub const PATTERN: &'static str = concat!(
        r"^[^\u0000-\u001F\u007F-\u009F]*",
        r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
        r"[^\u0000-\u001F\u007F-\u009F]*$",
    );

    /// What [`TaskName::lossy`] shows for a stored name that is empty or blank.
    pub const UNNAMED: &'static str = "(unnamed)";

    /// Checks every rule and returns a name that is valid for as long as it lives.
    pub fn parse(input: impl Into<String>) -> Result<Self, TaskNameError> {
        let input = input.into();
        Self::check(&input)?;
        Ok(Self(input))
    }

    fn check(input: &str) -> Result<(), TaskNameError> {
        if input.is_empty() {
            return Err(TaskNameError::Empty);
        }
        // Most names are printable ASCII, where a byte is a character, none is a control character and only the
        // space is white space: one pass over the bytes then decides, instead of decoding and classifying characters.
        if input.bytes().all(|byte| byte.is_ascii_graphic() || byte == b' ') {
            return if input.len() > Self::MAX_CHARS {
                Err(TaskNameError::TooLong { chars: input.len() })
            } else if input.bytes().all(|byte| byte == b' ') {
                Err(TaskNameError::Blank)
            } else {
                Ok(())
            };
        }
        let mut chars = 0;
        let mut blank = true;
        for (position, c) in input.chars().enumerate() {
            if c.is_control() {
                return Err(TaskNameError::ControlCharacter {
                    code_point: u32::from(c),
                    position,
                });
            }
            blank &= c.is_whitespace();
            chars += 1;
        }
        if chars > Self::MAX_CHARS {
            return Err(TaskNameError::TooLong { chars });
        }
        if blank {
            return Err(TaskNameError::Blank);
        }
        Ok(())
    }

    /// The nearest valid name to `input`, for names written before these rules existed (the original service took
    /// any string): control characters become U+FFFD, characters beyond the 255th are cut, and a blank name reads as
    /// `(unnamed)`. Input from clients goes through [`TaskName::parse`] instead, and is refused when invalid.
    #[must_use]
    pub fn lossy(input: String) -> Self {
        if Self::check(&input).is_ok() {
            return Self(input);
        }
        let cleaned: String = input
            .chars()
            .take(Self::MAX_CHARS)
            .map(|c| if c.is_control() { char::REPLACEMENT_CHARACTER } else { c })
            .collect();
        if cleaned.trim().is_empty() {
            Self(Self::UNNAMED.to_owned())
        } else {
            Self(cleaned)
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    #[must_use]
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl AsRef<str> for TaskName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A unit of work with a name. The identity never changes; the name may.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: TaskId,
    pub name: TaskName,
}

impl Task {
    /// A new task with a freshly generated identity.
    #[must_use]
    pub fn new(name: TaskName) -> Self {
        Self {
            id: TaskId::generate(),
            name,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_at_the_limit_are_counted_in_characters_not_bytes() {
        let emoji = "🦀".repeat(TaskName::MAX_CHARS);
        assert_eq!(emoji.len(), 4 * TaskName::MAX_CHARS);
        assert_eq!(TaskName::parse(emoji.clone()).map(TaskName::into_inner), Ok(emoji));
    }

    #[test]
    fn one_character_too_many_is_rejected() {
        let name = "a".repeat(TaskName::MAX_CHARS + 1);
        assert_eq!(TaskName::parse(name), Err(TaskNameError::TooLong { chars: 256 }));
    }

    #[test]
    fn empty_and_blank_names_are_rejected() {
        assert_eq!(TaskName::parse(""), Err(TaskNameError::Empty));
        assert_eq!(TaskName::parse(" \u{3000} "), Err(TaskNameError::Blank));
    }

    #[test]
    fn nul_is_rejected_with_its_position() {
        assert_eq!(
            TaskName::parse("ab\0c"),
            Err(TaskNameError::ControlCharacter {
                code_point: 0,
                position: 2
            })
        );
    }

    #[test]
    fn legacy_names_are_repaired_not_hidden() {
        assert_eq!(TaskName::lossy("fine".into()).as_str(), "fine");
        assert_eq!(TaskName::lossy("a\tb".into()).as_str(), "a\u{FFFD}b");
        assert_eq!(TaskName::lossy("  ".into()).as_str(), TaskName::UNNAMED);
        assert_eq!(
            TaskName::lossy("x".repeat(300)).as_str().chars().count(),
            TaskName::MAX_CHARS
        );
    }

    #[test]
    fn generated_ids_are_time_ordered() {
        let first = TaskId::generate();
        let second = TaskId::generate();
        assert!(first < second);
        assert_eq!(first.as_uuid().get_version_num(), 7);
    }

    #[test]
    fn ids_round_trip_through_text_and_garbage_is_refused() {
        let id = TaskId::generate();
        assert_eq!(id.to_string().parse::<TaskId>(), Ok(id));
        assert!("not-a-uuid".parse::<TaskId>().is_err());
        let long = "x".repeat(10_000);
        let error = long.parse::<TaskId>().expect_err("garbage is not an id");
        assert!(error.to_string().len() < 200);
    }

    /// Whether `name` passes the rules as the OpenAPI document states them: [`TaskName::PATTERN`], `minLength` 1 and
    /// `maxLength` [`TaskName::MAX_CHARS`] (both counted in code points).
    fn schema_accepts(name: &str) -> bool {
        static PATTERN: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new(TaskName::PATTERN).expect("the pattern compiles"));
        PATTERN.is_match(name) && (1..=TaskName::MAX_CHARS).contains(&name.chars().count())
    }

    #[test]
    fn the_pattern_accepts_exactly_the_characters_the_rules_accept() {
        // Every Unicode scalar value, alone and after a letter: each is either refused both ways or accepted both ways.
        for c in (0..=u32::from(char::MAX)).filter_map(char::from_u32) {
            for name in [c.to_string(), format!("a{c}")] {
                assert_eq!(
                    schema_accepts(&name),
                    TaskName::parse(name.as_str()).is_ok(),
                    "{:?}",
                    name
                );
            }
        }
    }

    fn printable() -> impl Strategy<Value = char> {
        any::<char>().prop_filter("no control characters", |c| !c.is_control())
    }

    proptest! {
        #[test]
        fn every_printable_name_within_the_limit_is_kept_verbatim(
            name in proptest::collection::vec(printable(), 1..=TaskName::MAX_CHARS)
                .prop_map(String::from_iter)
                .prop_filter("not blank", |s| !s.trim().is_empty())
        ) {
            let parsed = TaskName::parse(name.clone());
            prop_assert_eq!(parsed.map(TaskName::into_inner), Ok(name));
        }

        #[test]
        fn any_control_character_anywhere_is_rejected(
            prefix in proptest::collection::vec(printable(), 0..100).prop_map(String::from_iter),
            control in any::<char>().prop_filter("control", |c| c.is_control()),
            suffix in proptest::collection::vec(printable(), 0..100).prop_map(String::from_iter),
        ) {
            let name = format!("{prefix}{control}{suffix}");
            let is_control_error = matches!(
                TaskName::parse(name),
                Err(TaskNameError::ControlCharacter { .. })
            );
            prop_assert!(is_control_error);
        }

        #[test]
        fn names_longer_than_the_limit_are_rejected(
            name in proptest::collection::vec(printable(), TaskName::MAX_CHARS + 1..600).prop_map(String::from_iter)
        ) {
            let is_too_long = matches!(TaskName::parse(name), Err(TaskNameError::TooLong { .. }));
            prop_assert!(is_too_long);
        }

        #[test]
        fn the_schema_and_the_rules_agree_on_every_name(
            // Mostly the characters the rules are about: controls, white space, a letter; then anything.
            name in proptest::collection::vec(
                prop_oneof![
                    Just('\0'), Just('\n'), Just('\u{85}'), Just(' '), Just('\u{3000}'), Just('\u{FEFF}'), Just('a'),
                    any::<char>(),
                ],
                0..300,
            ).prop_map(String::from_iter)
        ) {
            prop_assert_eq!(schema_accepts(&name), TaskName::parse(name.as_str()).is_ok(), "{:?}", name);
        }

        #[test]
        fn printable_ascii_names_are_judged_as_the_schema_judges_them(
            // The fast path: spaces and letters in every proportion, across the length limit.
            name in "[ -~]{0,300}|[ a]{0,300}"
        ) {
            prop_assert_eq!(schema_accepts(&name), TaskName::parse(name.as_str()).is_ok(), "{:?}", name);
        }

        #[test]
        fn parsing_never_panics(name in ".*") {
            let _ = TaskName::parse(name);
        }
    }
}
