//! Calendar dates as callers say them in Brazilian Portuguese ("amanhã", "segunda",
//! "24/11", "dia 24", "24 de novembro") or as ISO dates, resolved against today in
//! the business's time zone. Pure functions; civil-date arithmetic after Howard
//! Hinnant's `days_from_civil` algorithms.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

/// A calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

const WEEKDAYS_PT: [&str; 7] = [
    "segunda-feira",
    "terça-feira",
    "quarta-feira",
    "quinta-feira",
    "sexta-feira",
    "sábado",
    "domingo",
];
const MONTHS_PT: [&str; 12] = [
    "janeiro",
    "fevereiro",
    "março",
    "abril",
    "maio",
    "junho",
    "julho",
    "agosto",
    "setembro",
    "outubro",
    "novembro",
    "dezembro",
];

impl Date {
    /// A valid date, or `None`.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Self> {
        ((1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month))
            .then_some(Self { year, month, day })
    }

    /// Days since 1970-01-01.
    pub fn to_days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = if y >= 0 { y } else { y - 399 } / 400;
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    pub fn from_days(days: i64) -> Self {
        let z = days + 719_468;
        let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Self { year, month, day }
    }

    pub fn add_days(self, n: i64) -> Self {
        Self::from_days(self.to_days() + n)
    }

    /// 0 = Monday … 6 = Sunday.
    pub fn weekday(self) -> u32 {
        (self.to_days() + 3).rem_euclid(7) as u32
    }

    /// Today at `offset_minutes` from UTC.
    pub fn today(now: SystemTime, offset_minutes: i32) -> Self {
        let secs = match now.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        };
        Self::from_days((secs + i64::from(offset_minutes) * 60).div_euclid(86_400))
    }

    /// "segunda-feira, 24 de novembro".
    pub fn spoken_pt(self) -> String {
        format!(
            "{}, {} de {}",
            WEEKDAYS_PT[self.weekday() as usize],
            self.day,
            MONTHS_PT[self.month as usize - 1]
        )
    }

    pub fn weekday_pt(self) -> &'static str {
        WEEKDAYS_PT[self.weekday() as usize]
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

/// Lower case, accents removed, everything but letters, digits, `/`, `-` and `:`
/// turned into single spaces.
fn fold(text: &str) -> String {
    let mut out = String::new();
    for c in text.to_lowercase().chars() {
        let c = match crate::text::fold_char(c) {
            c if c.is_alphanumeric() || matches!(c, '/' | '-' | ':') => c,
            _ => ' ',
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

/// Why a day could not be understood; the text is for the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DayError {
    NotUnderstood(String),
    Past(Date),
}

impl fmt::Display for DayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUnderstood(text) => write!(
                f,
                "could not understand the day {text:?}; ask the caller again (e.g. amanhã, segunda-feira, 24/11)"
            ),
            Self::Past(date) => write!(
                f,
                "{date} has already passed; ask the caller for a day from today on"
            ),
        }
    }
}

/// The day the caller means, from today on.
pub fn parse_day(text: &str, today: Date) -> Result<Date, DayError> {
    let date = find_day(&fold(text), today)
        .ok_or_else(|| DayError::NotUnderstood(text.trim().to_string()))?;
    if date < today {
        return Err(DayError::Past(date));
    }
    Ok(date)
}

fn find_day(text: &str, today: Date) -> Option<Date> {
    let words: Vec<&str> = text.split(' ').collect();
    // ISO dates and dd/mm[/yyyy].
    for word in &words {
        let parts: Vec<&str> = word.split('-').collect();
        if parts.len() == 3 && parts[0].len() == 4 {
            let (y, m, d) = (
                parts[0].parse().ok()?,
                parts[1].parse().ok()?,
                parts[2].parse().ok()?,
            );
            return Date::new(y, m, d);
        }
        let parts: Vec<&str> = word.split('/').collect();
        if (2..=3).contains(&parts.len()) {
            let d: u32 = parts[0].parse().ok()?;
            let m: u32 = parts[1].parse().ok()?;
            return match parts.get(2) {
                Some(y) => {
                    let y: i32 = y.parse().ok()?;
                    Date::new(if y < 100 { 2000 + y } else { y }, m, d)
                }
                None => next_with(today, m, d),
            };
        }
    }
    if text.contains("depois de amanha") {
        return Some(today.add_days(2));
    }
    if words.contains(&"amanha") || words.contains(&"tomorrow") {
        return Some(today.add_days(1));
    }
    if words.contains(&"hoje") || words.contains(&"today") {
        return Some(today);
    }
    // "24 de novembro", "24 novembro".
    for (i, word) in words.iter().enumerate() {
        if let Some(month) = month_number(word) {
            let before = words[..i]
                .iter()
                .rev()
                .find_map(|w| w.parse::<u32>().ok())?;
            return next_with(today, month, before);
        }
    }
    const WEEKDAYS: [[&str; 2]; 7] = [
        ["segunda", "monday"],
        ["terca", "tuesday"],
        ["quarta", "wednesday"],
        ["quinta", "thursday"],
        ["sexta", "friday"],
        ["sabado", "saturday"],
        ["domingo", "sunday"],
    ];
    for word in &words {
        let stem = word.split('-').next().unwrap_or(word);
        if let Some(target) = WEEKDAYS.iter().position(|names| names.contains(&stem)) {
            let ahead = (target as i64 - today.weekday() as i64).rem_euclid(7);
            return Some(today.add_days(if ahead == 0 { 7 } else { ahead }));
        }
    }
    // "dia 24": this month if still ahead, else the next.
    if let Some(i) = words.iter().position(|w| *w == "dia")
        && let Some(day) = words.get(i + 1).and_then(|w| w.parse::<u32>().ok())
    {
        let this = Date::new(today.year, today.month, day);
        if let Some(d) = this.filter(|d| *d >= today) {
            return Some(d);
        }
        let (y, m) = if today.month == 12 {
            (today.year + 1, 1)
        } else {
            (today.year, today.month + 1)
        };
        return Date::new(y, m, day);
    }
    None
}

/// The next `day/month` from today on (this year, else next year).
fn next_with(today: Date, month: u32, day: u32) -> Option<Date> {
    let this = Date::new(today.year, month, day)?;
    if this >= today {
        Some(this)
    } else {
        Date::new(today.year + 1, month, day)
    }
}

fn month_number(word: &str) -> Option<u32> {
    MONTHS_PT
        .iter()
        .position(|m| crate::text::fold(m) == word)
        .map(|i| i as u32 + 1)
}

/// A time of day as `HH:MM` ("15h", "15:30", "3 da tarde", "meio-dia"), or `None`.
pub fn parse_time(text: &str) -> Option<String> {
    let text = fold(text);
    if text.contains("meio dia") || text.contains("meio-dia") {
        return Some("12:00".into());
    }
    let bytes = text.as_bytes();
    let start = bytes.iter().position(u8::is_ascii_digit)?;
    let digits_end = |from: usize| {
        (from..bytes.len())
            .find(|&i| !bytes[i].is_ascii_digit())
            .unwrap_or(bytes.len())
    };
    let end = digits_end(start);
    let mut hour: u32 = text[start..end].parse().ok()?;
    let mut minute = 0;
    if matches!(bytes.get(end), Some(b':' | b'h')) {
        let m_end = digits_end(end + 1);
        if m_end > end + 1 {
            minute = text[end + 1..m_end].parse().ok()?;
        }
    }
    let later = &text[end..];
    if hour < 12 && (later.contains("tarde") || later.contains("noite") || later.contains("pm")) {
        hour += 12;
    }
    (hour < 24 && minute < 60).then(|| format!("{hour:02}:{minute:02}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Monday, 24 November 2025.
    fn monday() -> Date {
        Date::new(2025, 11, 24).unwrap()
    }

    #[test]
    fn civil_day_arithmetic_round_trips() {
        assert_eq!(Date::new(1970, 1, 1).unwrap().to_days(), 0);
        for days in [-800_000, -1, 0, 59, 365, 11_016, 20_416, 2_000_000] {
            assert_eq!(Date::from_days(days).to_days(), days);
        }
        assert_eq!(monday().weekday(), 0);
        assert_eq!(
            Date::new(2024, 2, 29).unwrap().add_days(1).to_string(),
            "2024-03-01"
        );
        assert!(Date::new(2025, 2, 29).is_none());
        assert_eq!(monday().spoken_pt(), "segunda-feira, 24 de novembro");
    }

    #[test]
    fn today_respects_the_offset() {
        // 2025-11-25 01:00 UTC is still the 24th in Brazil (UTC-3).
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_764_032_400);
        assert_eq!(Date::today(t, 0).to_string(), "2025-11-25");
        assert_eq!(Date::today(t, -180).to_string(), "2025-11-24");
    }

    #[test]
    fn portuguese_days_are_understood() {
        let today = monday();
        let day = |s: &str| parse_day(s, today).map(|d| d.to_string());
        assert_eq!(day("amanhã").unwrap(), "2025-11-25");
        assert_eq!(day("depois de amanhã").unwrap(), "2025-11-26");
        assert_eq!(day("hoje à tarde").unwrap(), "2025-11-24");
        assert_eq!(day("na quarta-feira").unwrap(), "2025-11-26");
        assert_eq!(day("Sexta").unwrap(), "2025-11-28");
        assert_eq!(day("segunda").unwrap(), "2025-12-01");
        assert_eq!(day("sábado").unwrap(), "2025-11-29");
        assert_eq!(day("24/11").unwrap(), "2025-11-24");
        assert_eq!(day("dia 3/1").unwrap(), "2026-01-03");
        assert_eq!(day("05/12/2025").unwrap(), "2025-12-05");
        assert_eq!(day("2026-02-10").unwrap(), "2026-02-10");
        assert_eq!(day("30 de novembro").unwrap(), "2025-11-30");
        assert_eq!(day("dia 10").unwrap(), "2025-12-10");
        assert_eq!(day("dia 28").unwrap(), "2025-11-28");
        assert!(matches!(
            day("qualquer dia"),
            Err(DayError::NotUnderstood(_))
        ));
        assert!(matches!(day("31/02"), Err(DayError::NotUnderstood(_))));
        assert!(matches!(day("2025-01-10"), Err(DayError::Past(_))));
    }

    #[test]
    fn times_are_normalised() {
        assert_eq!(parse_time("15h").as_deref(), Some("15:00"));
        assert_eq!(parse_time("às 15h30").as_deref(), Some("15:30"));
        assert_eq!(parse_time("9:05").as_deref(), Some("09:05"));
        assert_eq!(parse_time("3 da tarde").as_deref(), Some("15:00"));
        assert_eq!(parse_time("às 8 da noite").as_deref(), Some("20:00"));
        assert_eq!(parse_time("meio-dia").as_deref(), Some("12:00"));
        assert_eq!(parse_time("de manhã cedo"), None);
        assert_eq!(parse_time("25h"), None);
    }
}
