//! A push request held in memory, before it is encoded: entries grouped
//! into streams by label set, each stream's entries in the order they were
//! added, every line in one shared text arena.
//!
//! Entries arrive tagged with the [`LokiStream`] of their container and
//! output (an `Rc` the caller builds once per container). Several of those
//! can share a label set (a container recreated under the same name, two
//! hosts' worth of static labels…): they are one Loki stream, so they are
//! grouped by label set, while each entry keeps its own source for its
//! structured metadata. Finding the group costs a pointer comparison when
//! an entry comes from the same source as the previous one (the usual case:
//! a read yields many lines of one container), and a hash lookup otherwise.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use super::labels::LokiStream;

/// One entry, borrowed from a [`PushRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Nanoseconds since the epoch.
    pub timestamp_ns: i64,
    pub line: &'a str,
    /// The metadata of the entry's source.
    pub metadata: &'a [(String, String)],
    /// The line was cut: the encoders add `truncated="true"` metadata.
    pub truncated: bool,
}

/// Name and value of the structured metadata marking a cut line.
pub const TRUNCATED_METADATA: (&str, &str) = ("truncated", "true");

#[derive(Debug, Clone, Copy)]
struct RawEntry {
    timestamp_ns: i64,
    /// Byte range of the line in the arena.
    start: u32,
    end: u32,
    source: u32,
    truncated: bool,
}

#[derive(Debug)]
struct Group {
    /// The first source seen with this label set; its labels are the
    /// group's.
    labels: Rc<LokiStream>,
    entries: Vec<RawEntry>,
}

/// A source, keyed by its label set when looking up groups.
#[derive(Debug)]
struct ByLabels(Rc<LokiStream>);

impl PartialEq for ByLabels {
    fn eq(&self, other: &Self) -> bool {
        self.0.rendered() == other.0.rendered()
    }
}

impl Eq for ByLabels {}

impl Hash for ByLabels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.rendered().hash(state);
    }
}

#[derive(Debug, Default)]
pub struct PushRequest {
    /// Every line, one after the other.
    arena: String,
    groups: Vec<Group>,
    /// Entry vectors of the groups of earlier requests, emptied, kept for
    /// the next ones (a batch of 1 000 streams would otherwise grow 1 000
    /// vectors from nothing every time: measured, 15 % of the agent's time
    /// in malloc).
    spare: Vec<Vec<RawEntry>>,
    group_of: HashMap<ByLabels, u32>,
    /// Distinct sources (by identity) and the group of each.
    sources: Vec<(Rc<LokiStream>, u32)>,
    /// `Rc::as_ptr` of each source → its index in `sources`. Sound as a
    /// key because `sources` keeps every one of them alive until `clear`.
    source_of: HashMap<usize, u32>,
    /// The source of the last entry added.
    last: Option<u32>,
    entries: usize,
    /// Encode no structured metadata (the receiver refuses it); kept
    /// across [`clear`](Self::clear).
    no_metadata: bool,
}

impl PushRequest {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Whether entries carry their structured metadata (and the
    /// `truncated` marker) when encoded.
    pub fn set_metadata(&mut self, on: bool) {
        self.no_metadata = !on;
    }

    pub fn metadata(&self) -> bool {
        !self.no_metadata
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries
    }

    /// Bytes of all lines together.
    pub fn line_bytes(&self) -> usize {
        self.arena.len()
    }

    /// Start a new entry of `source`: the caller appends its line to
    /// [`line_buf`](Self::line_buf) and then calls
    /// [`end_entry`](Self::end_entry). Two steps so that the line is
    /// written (converted, cut) straight into the arena, never copied
    /// twice.
    pub fn line_buf(&mut self) -> &mut String {
        &mut self.arena
    }

    /// Finish the entry whose line was appended to [`line_buf`](Self::line_buf)
    /// since `start` (the buffer's length before).
    pub fn end_entry(&mut self, source: &Rc<LokiStream>, timestamp_ns: i64, start: usize, truncated: bool) {
        let index = self.source_index(source);
        let group = self.sources[index as usize].1;
        self.groups[group as usize].entries.push(RawEntry {
            timestamp_ns,
            start: u32::try_from(start).expect("a batch holds at most 128 MiB of lines"),
            end: u32::try_from(self.arena.len()).expect("a batch holds at most 128 MiB of lines"),
            source: index,
            truncated,
        });
        self.entries += 1;
    }

    /// Add an entry whose line needs no conversion.
    pub fn push(&mut self, source: &Rc<LokiStream>, timestamp_ns: i64, line: &str, truncated: bool) {
        let start = self.arena.len();
        self.arena.push_str(line);
        self.end_entry(source, timestamp_ns, start, truncated);
    }

    fn source_index(&mut self, source: &Rc<LokiStream>) -> u32 {
        if let Some(last) = self.last {
            if Rc::ptr_eq(&self.sources[last as usize].0, source) {
                return last;
            }
        }
        let key = Rc::as_ptr(source) as usize;
        let index = match self.source_of.get(&key) {
            Some(&index) => index,
            None => {
                let next_group = self.groups.len() as u32;
                let group = *self.group_of.entry(ByLabels(source.clone())).or_insert(next_group);
                if group == next_group {
                    let entries = self.spare.pop().unwrap_or_default();
                    self.groups.push(Group { labels: source.clone(), entries });
                }
                let index = self.sources.len() as u32;
                self.sources.push((source.clone(), group));
                self.source_of.insert(key, index);
                index
            }
        };
        self.last = Some(index);
        index
    }

    /// Empty the request, keeping the arena's allocation for the next one.
    pub fn clear(&mut self) {
        self.arena.clear();
        for mut g in self.groups.drain(..) {
            g.entries.clear();
            self.spare.push(g.entries);
        }
        self.group_of.clear();
        self.sources.clear();
        self.source_of.clear();
        self.last = None;
        self.entries = 0;
    }

    /// The streams, in the order their label sets first appeared.
    pub fn streams(&self) -> impl ExactSizeIterator<Item = Stream<'_>> + Clone {
        self.groups.iter().map(move |group| Stream { req: self, group })
    }
}

/// One stream of a [`PushRequest`]: a label set and its entries.
#[derive(Clone, Copy)]
pub struct Stream<'a> {
    req: &'a PushRequest,
    group: &'a Group,
}

impl<'a> Stream<'a> {
    pub fn labels(&self) -> &'a LokiStream {
        &self.group.labels
    }

    pub fn len(&self) -> usize {
        self.group.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.group.entries.is_empty()
    }

    /// The entries, in the order they were added.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = Entry<'a>> + Clone + 'a {
        let req = self.req;
        let on = !req.no_metadata;
        self.group.entries.iter().map(move |e| Entry {
            timestamp_ns: e.timestamp_ns,
            line: &req.arena[e.start as usize..e.end as usize],
            metadata: if on { req.sources[e.source as usize].0.metadata() } else { &[] },
            truncated: on && e.truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(labels: &[(&str, &str)], id: &str) -> Rc<LokiStream> {
        Rc::new(LokiStream::new(
            labels.iter().map(|&(n, v)| (n.to_owned(), v.to_owned())).collect(),
            vec![("container_id".to_owned(), id.to_owned())],
        ))
    }

    /// Per stream: labels, and (timestamp, line, container id) per entry.
    type Dump = Vec<(String, Vec<(i64, String, String)>)>;

    fn dump(req: &PushRequest) -> Dump {
        req.streams()
            .map(|s| {
                let entries = s
                    .entries()
                    .map(|e| (e.timestamp_ns, e.line.to_owned(), e.metadata[0].1.clone()))
                    .collect();
                (s.labels().rendered().to_owned(), entries)
            })
            .collect()
    }

    #[test]
    fn entries_group_by_label_set_and_keep_their_order_and_metadata() {
        let web_a = source(&[("container", "web")], "a");
        // Same label set, another container (recreated under that name).
        let web_b = source(&[("container", "web")], "b");
        let db = source(&[("container", "db")], "c");
        let mut req = PushRequest::new();
        req.push(&web_a, 1, "a1", false);
        req.push(&db, 2, "c1", false);
        req.push(&web_a, 3, "a2", false);
        req.push(&web_b, 4, "b1", false);
        req.push(&web_a, 5, "a3", true);
        assert_eq!(req.len(), 5);
        assert_eq!(req.line_bytes(), 10);
        assert_eq!(
            dump(&req),
            vec![
                (
                    r#"{container="web"}"#.to_owned(),
                    vec![
                        (1, "a1".into(), "a".into()),
                        (3, "a2".into(), "a".into()),
                        (4, "b1".into(), "b".into()),
                        (5, "a3".into(), "a".into())
                    ]
                ),
                (r#"{container="db"}"#.to_owned(), vec![(2, "c1".into(), "c".into())]),
            ]
        );
        assert!(req.streams().next().unwrap().entries().nth(3).unwrap().truncated);

        req.clear();
        assert!(req.is_empty());
        assert_eq!(req.streams().len(), 0);
        req.push(&db, 6, "c2", false);
        assert_eq!(dump(&req), vec![(r#"{container="db"}"#.to_owned(), vec![(6, "c2".into(), "c".into())])]);
    }
}
