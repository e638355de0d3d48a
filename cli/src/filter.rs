//! `--filter KEY=VALUE` options as the core's dead-letter filter.

use std::time::{Duration, SystemTime};

use pillarbox::DeadLetterFilter;

use crate::failure::{Failure, Outcome};

/// Every filter must match; `id=` may be given several times.
pub fn parse(filters: &[String]) -> Outcome<DeadLetterFilter> {
    let mut f = DeadLetterFilter::default();
    for given in filters {
        let Some((key, value)) = given.split_once('=') else {
            return Err(usage(given, "write KEY=VALUE"));
        };
        match key {
            "kind" => f.error_kind = Some(value.to_string()),
            "cause" => f.cause = Some(value.to_string()),
            "contains" => f.error_contains = Some(value.to_string()),
            "id" => f.message_ids.get_or_insert_with(Vec::new).push(value.to_string()),
            "before" => f.failed_before = Some(before(value).ok_or_else(|| usage(given, BEFORE))?),
            _ => return Err(usage(given, "known keys: kind, cause, contains, id, before")),
        }
    }
    Ok(f)
}

const BEFORE: &str = "`before` takes a time (2026-01-01T00:00:00Z) or an age (1h: at least an hour ago)";

fn before(value: &str) -> Option<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(value) {
        return Some(t);
    }
    let ago: Duration = humantime::parse_duration(value).ok()?;
    SystemTime::now().checked_sub(ago)
}

fn usage(given: &str, why: &str) -> Failure {
    Failure::Usage(format!("invalid --filter `{given}`: {why}"))
}

/// Whether the filter selects everything.
pub fn is_empty(f: &DeadLetterFilter) -> bool {
    f.error_kind.is_none()
        && f.cause.is_none()
        && f.error_contains.is_none()
        && f.failed_before.is_none()
        && f.message_ids.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_combine_and_ids_repeat() {
        let f = parse(&["kind=ValueError".into(), "id=a".into(), "id=b".into(), "contains=x=y".into()]).unwrap();
        assert_eq!(f.error_kind.as_deref(), Some("ValueError"));
        assert_eq!(f.message_ids, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(f.error_contains.as_deref(), Some("x=y"));
        assert!(!is_empty(&f));
        assert!(is_empty(&parse(&[]).unwrap()));
    }

    #[test]
    fn before_takes_a_time_or_an_age() {
        let at = parse(&["before=2026-01-01T00:00:00Z".into()]).unwrap().failed_before.unwrap();
        assert_eq!(humantime::format_rfc3339_seconds(at).to_string(), "2026-01-01T00:00:00Z");
        let ago = parse(&["before=1h".into()]).unwrap().failed_before.unwrap();
        let age = SystemTime::now().duration_since(ago).unwrap();
        assert!(age >= Duration::from_secs(3600) && age < Duration::from_secs(3700));
    }

    #[test]
    fn bad_filters_are_usage_errors() {
        for bad in ["kind", "colour=red", "before=soon"] {
            let e = parse(&[bad.to_string()]).unwrap_err();
            assert!(matches!(e, Failure::Usage(_)), "{bad}: {e}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }
}
