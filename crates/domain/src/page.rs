use crate::{Task, TaskId};

/// How many tasks one page may hold: 1 to 1000, 50 when the client does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u16);

/// Why a requested page size is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the page limit must be between 1 and {max}, got {requested}", max = PageLimit::MAX)]
pub struct PageLimitError {
    requested: u64,
}

impl PageLimit {
    pub const DEFAULT: Self = Self(50);
    pub const MAX: u16 = 1000;

    pub fn new(requested: u64) -> Result<Self, PageLimitError> {
        u16::try_from(requested)
            .ok()
            .filter(|limit| (1..=Self::MAX).contains(limit))
            .map(Self)
            .ok_or(PageLimitError { requested })
    }

    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A request for the tasks that follow `after` in identifier order (keyset pagination): its cost depends on the
/// page size only, never on how many tasks precede it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageRequest {
    pub limit: PageLimit,
    pub after: Option<TaskId>,
}

/// One page of tasks in identifier order, and where the next one starts if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub tasks: Vec<Task>,
    pub next_after: Option<TaskId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_outside_one_to_a_thousand_are_refused() {
        assert!(PageLimit::new(0).is_err());
        assert!(PageLimit::new(1001).is_err());
        assert!(PageLimit::new(u64::MAX).is_err());
        assert_eq!(PageLimit::new(1).map(PageLimit::get), Ok(1));
        assert_eq!(PageLimit::new(1000).map(PageLimit::get), Ok(1000));
        assert_eq!(PageLimit::default().get(), 50);
    }
}
