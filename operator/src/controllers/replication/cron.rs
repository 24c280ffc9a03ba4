//! When a CronJob schedule next fires (UTC, as the CronJob controller reads a schedule without
//! `timeZone`): the five fields (`*`, `*/n`, `a-b`, `a-b/n`, lists) and the `@hourly`-style
//! names. Only for the status: Kubernetes itself runs the schedule.

use jiff::civil::DateTime;
use jiff::{tz::TimeZone, Timestamp, ToSpan};

struct Schedule {
    minutes: [bool; 60],
    hours: [bool; 24],
    days: [bool; 32],
    months: [bool; 13],
    weekdays: [bool; 7],
    /// Both day fields restricted: a day matching either runs (as cron has it).
    either_day: bool,
}

fn field<const N: usize>(text: &str, min: u32, max: u32) -> Result<[bool; N], String> {
    let mut set = [false; N];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| format!("step {s:?}"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err("a step of 0".into());
        }
        let (lo, hi) = match range {
            "*" => (min, max),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None if part.contains('/') => (num(r)?, max),
                None => (num(r)?, num(r)?),
            },
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        for v in (lo..=hi).step_by(step as usize) {
            // Sunday is 0 or 7.
            set[(v as usize) % N.max(1)] = true;
        }
    }
    Ok(set)
}

fn num(s: &str) -> Result<u32, String> {
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

impl Schedule {
    fn parse(text: &str) -> Result<Schedule, String> {
        let expanded = match text.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = f[..] else {
            return Err(format!("{text:?}: five fields (minute hour day month weekday) are needed"));
        };
        Ok(Schedule {
            minutes: field(minute, 0, 59)?,
            hours: field(hour, 0, 23)?,
            days: field(day, 1, 31)?,
            months: field(month, 1, 12)?,
            weekdays: field(weekday, 0, 7)?,
            either_day: day != "*" && weekday != "*",
        })
    }

    fn day_matches(&self, t: DateTime) -> bool {
        let day = self.days[t.day() as usize];
        let weekday = self.weekdays[t.weekday().to_sunday_zero_offset() as usize];
        if self.either_day {
            day || weekday
        } else {
            day && weekday
        }
    }
}

/// The first minute after `after` that `schedule` fires at; an error for a schedule that does
/// not parse, `None` for one that never fires (30 February).
pub fn next(schedule: &str, after: Timestamp) -> Result<Option<Timestamp>, String> {
    let s = Schedule::parse(schedule)?;
    let utc = TimeZone::UTC;
    let start = after.to_zoned(utc.clone()).datetime();
    // The minute after the one `after` falls in.
    let minute = start.with().second(0).subsec_nanosecond(0).build().map_err(|e| e.to_string())?;
    let mut t = minute.checked_add(1.minute()).map_err(|e| e.to_string())?;
    // Within five years every satisfiable schedule fires; each step skips what cannot match.
    let limit = start.checked_add(5.years()).map_err(|e| e.to_string())?;
    while t < limit {
        if !s.months[t.month() as usize] {
            t = t.first_of_month().checked_add(1.month()).map_err(|e| e.to_string())?.start_of_day();
        } else if !s.day_matches(t) {
            t = t.checked_add(1.day()).map_err(|e| e.to_string())?.start_of_day();
        } else if !s.hours[t.hour() as usize] {
            t = t
                .with()
                .minute(0)
                .build()
                .map_err(|e| e.to_string())?
                .checked_add(1.hour())
                .map_err(|e| e.to_string())?;
        } else if !s.minutes[t.minute() as usize] {
            t = t.checked_add(1.minute()).map_err(|e| e.to_string())?;
        } else {
            return t.to_zoned(utc).map(|z| Some(z.timestamp())).map_err(|e| e.to_string());
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn next_runs() {
        let now = at("2026-12-04T13:29:30Z");
        for (schedule, want) in [
            ("* * * * *", "2026-12-04T13:30:00Z"),
            ("*/15 * * * *", "2026-12-04T13:30:00Z"),
            ("0 3 * * *", "2026-12-05T03:00:00Z"),
            ("@hourly", "2026-12-04T14:00:00Z"),
            ("30 2 1 * *", "2027-01-01T02:30:00Z"),
            ("0 9 * * 1-5", "2026-12-07T09:00:00Z"),
            ("0 0 * * 7", "2026-12-06T00:00:00Z"),
            ("0 0 13 * 5", "2026-12-11T00:00:00Z"),
            ("5,35 10-12/2 * 12 *", "2026-12-05T10:05:00Z"),
        ] {
            assert_eq!(next(schedule, now).unwrap(), Some(at(want)), "{schedule}");
        }
        assert_eq!(next("0 0 30 2 *", now).unwrap(), None, "February has no 30th");
        assert_eq!(next("* * * * *", at("2026-12-04T13:29:00Z")).unwrap(), Some(at("2026-12-04T13:30:00Z")));
        for bad in ["* * * *", "61 * * * *", "*/0 * * * *", "a * * * *"] {
            assert!(next(bad, now).is_err(), "{bad}");
        }
    }
}
