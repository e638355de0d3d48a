//! The delivery record kept in a partition's commit metadata (`Marks`): how
//! many times each offset was handed out. Separate: a small format of its
//! own, with no state behind it, read also by the broker's inspection.

/// Deliveries recorded in a partition's commit metadata: the offsets from
/// the committed one up to `through` were handed out `count` times (counts
/// fall as offsets rise). Written `pb1:through:count,...`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(in crate::backends::kafka) struct Marks(pub(super) Vec<(i64, u32)>);

/// Segments kept in the metadata (older ones merge into the last).
pub(super) const MAX_MARKS: usize = 16;

impl Marks {
    pub fn parse(s: &str) -> Marks {
        let Some(body) = s.strip_prefix("pb1:") else { return Marks::default() };
        let mut marks = Vec::new();
        for seg in body.split(',').filter(|s| !s.is_empty()) {
            let Some((t, c)) = seg.split_once(':') else { return Marks::default() };
            match (t.parse::<i64>(), c.parse::<u32>()) {
                (Ok(t), Ok(c)) if c > 0 => marks.push((t, c)),
                _ => return Marks::default(),
            }
        }
        marks.sort_by_key(|m| m.0);
        Marks(marks)
    }

    pub fn encode(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let body: Vec<String> = self.0.iter().map(|(t, c)| format!("{t}:{c}")).collect();
        format!("pb1:{}", body.join(","))
    }

    /// How many times `offset` was handed out before.
    pub fn count_at(&self, offset: i64) -> u32 {
        self.0.iter().find(|(t, _)| offset <= *t).map_or(0, |m| m.1)
    }

    /// These marks plus one delivery of every offset up to `through`.
    pub fn with_prefix(&self, through: i64) -> Marks {
        let mut points: Vec<i64> = self.0.iter().map(|m| m.0).chain([through]).collect();
        points.sort_unstable();
        points.dedup();
        let marks = points.into_iter().map(|t| (t, self.count_at(t) + u32::from(t <= through))).collect();
        Marks(marks)
    }

    /// The marks that still matter once everything before `start` is committed.
    pub fn from(&self, start: i64) -> Marks {
        let mut marks: Vec<(i64, u32)> = self.0.iter().copied().filter(|(t, _)| *t >= start).collect();
        if marks.len() > MAX_MARKS {
            let tail = marks.split_off(MAX_MARKS - 1);
            let last = tail.last().copied().unwrap_or_default();
            let lowest = tail.iter().map(|m| m.1).min().unwrap_or(1);
            marks.push((last.0, lowest));
        }
        Marks(marks)
    }

    /// The highest offset handed out, if any.
    pub fn through(&self) -> Option<i64> {
        self.0.last().map(|m| m.0)
    }
}
