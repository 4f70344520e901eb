//! Field-level validation failures, gathered so a client learns every bad
//! field of a request at once instead of one per round trip.

use std::fmt;

/// One field that failed validation, and why, in words fit for a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name as the client sent it (`display_name`), so it can point at it.
    pub field: String,
    /// What is wrong, completing a sentence that starts with the field's name.
    pub message: String,
}

/// Every field of one request that failed validation; never empty when returned as an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    /// Starts an empty collection to gather failures into.
    pub fn new() -> Self {
        Self::default()
    }

    /// A collection holding one failure.
    pub fn single(field: impl Into<String>, message: impl fmt::Display) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    /// Records that `field` is invalid.
    pub fn add(&mut self, field: impl Into<String>, message: impl fmt::Display) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.to_string(),
        });
    }

    /// Keeps the value of `result`, or records its error against `field`.
    pub fn check<T, E: fmt::Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        result.map_err(|err| self.add(field, err)).ok()
    }

    /// The gathered failures.
    pub fn fields(&self) -> &[FieldError] {
        &self.0
    }

    /// True when nothing failed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(value)` when nothing failed, else these errors.
    pub fn into_result<T>(self, value: impl FnOnce() -> T) -> Result<T, Self> {
        if self.is_empty() {
            Ok(value())
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for error in &self.0 {
            if !first {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", error.field, error.message)?;
            first = false;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}
