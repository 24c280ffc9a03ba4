//! How the config writes durations (`30s`, `24h`) and byte sizes (`50Gi`).

/// Durations written as `500ms`, `30s`, `5m`, `24h` or `7d`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn parse(s: &str) -> Result<Duration, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 24h"))?;
        let ms = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(format!("{s:?} needs a unit: ms, s, m, h or d")),
        };
        n.checked_mul(ms).map(Duration::from_millis).ok_or_else(|| format!("{s:?} is too long"))
    }

    pub fn format(d: &Duration) -> String {
        let ms = d.as_millis();
        for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms >= size && ms % size == 0 {
                return format!("{}{unit}", ms / size);
            }
        }
        format!("{ms}ms")
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }

    /// The same, for optional fields.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_str(&super::format(d)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|s| super::parse(&s).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

/// Byte sizes written as a number of bytes or with a unit: `512Mi`, `50Gi`, `2Ti` (also `MiB`,
/// `GiB`) or the decimal `500M`, `10G`.
pub mod size {
    pub fn parse(s: &str) -> Result<u64, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like 500Mi or 50Gi"))?;
        let mult: u64 = match unit.trim_end_matches('B') {
            "" => 1,
            "K" | "k" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => return Err(format!("{s:?} has an unknown unit; use Ki, Mi, Gi or Ti")),
        };
        n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
    }

    pub fn format(n: u64) -> String {
        for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
            if n >= 1 << shift && n % (1 << shift) == 0 {
                return format!("{}{unit}", n >> shift);
            }
        }
        n.to_string()
    }

    /// A size for people, to one decimal: `512 B`, `1.5 KiB`, `3.0 MiB`.
    pub fn approximate(bytes: u64) -> String {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = bytes as f64;
        let mut u = 0;
        while v >= 1024.0 && u + 1 < UNITS.len() {
            v /= 1024.0;
            u += 1;
        }
        if u == 0 {
            format!("{bytes} B")
        } else {
            format!("{v:.1} {}", UNITS[u])
        }
    }

    /// Optional sizes, as a string with a unit or a plain number.
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }

        pub fn serialize<S: Serializer>(n: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
            match n {
                Some(n) => s.serialize_str(&super::format(*n)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
            match Option::<Raw>::deserialize(d)? {
                None => Ok(None),
                Some(Raw::Number(n)) => Ok(Some(n)),
                Some(Raw::Text(s)) => super::parse(&s).map(Some).map_err(serde::de::Error::custom),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn approximate_sizes_read_as_people_write_them() {
        use super::size::approximate;
        assert_eq!(approximate(512), "512 B");
        assert_eq!(approximate(1536), "1.5 KiB");
        assert_eq!(approximate(3 << 20), "3.0 MiB");
    }
}
