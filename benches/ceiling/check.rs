//! Exactly-once checks of an output file against the double's generated
//! lines (`<name> <seq> <stream> xxx…`, containers named `c00001`…).

use std::borrow::Cow;
use std::io::Read;
use std::path::Path;

#[derive(serde::Deserialize)]
struct Rec<'a> {
    #[serde(borrow)]
    container_name: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
}

/// Per container (index = number in its name - 1), every seq seen.
pub struct Seen {
    pub seqs: Vec<Vec<u32>>,
    pub records: u64,
    pub unparsed: u64,
}

pub fn read(path: &Path, containers: usize) -> Seen {
    let mut text = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let _ = f.read_to_end(&mut text);
    }
    let mut seen = Seen { seqs: vec![Vec::new(); containers], records: 0, unparsed: 0 };
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        seen.records += 1;
        let Ok(r) = serde_json::from_slice::<Rec>(line) else {
            seen.unparsed += 1;
            continue;
        };
        let idx = r.container_name.strip_prefix('c').and_then(|n| n.parse::<usize>().ok());
        let seq = r.message.split(' ').nth(1).and_then(|s| s.parse::<u32>().ok());
        match (idx, seq) {
            (Some(i), Some(s)) if (1..=containers).contains(&i) => seen.seqs[i - 1].push(s),
            _ => seen.unparsed += 1,
        }
    }
    seen
}

/// Lines missing and lines repeated, container by container, against
/// `expected[i]` lines (seqs 1..=expected) for container i.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub lost: u64,
    pub duplicated: u64,
    /// Containers with at least one line.
    pub with_lines: u64,
    /// Containers with every line exactly once.
    pub complete: u64,
}

pub fn tally(seen: &mut Seen, expected: impl Fn(usize) -> u64) -> Tally {
    let mut t = Tally::default();
    for (i, seqs) in seen.seqs.iter_mut().enumerate() {
        let want = expected(i);
        seqs.sort_unstable();
        let n = seqs.len() as u64;
        let before = seqs.len();
        seqs.dedup();
        let dups = (before - seqs.len()) as u64;
        let distinct_in_range = seqs.iter().filter(|&&s| s >= 1 && u64::from(s) <= want).count() as u64;
        t.duplicated += dups;
        t.lost += want - distinct_in_range;
        t.with_lines += u64::from(n > 0);
        t.complete += u64::from(want > 0 && dups == 0 && distinct_in_range == want && n == want);
    }
    t
}
