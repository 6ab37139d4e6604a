//! pprof protobuf output (gzipped), the format `go tool pprof`, Parca and
//! Pyroscope read. Messages follow github.com/google/pprof's profile.proto;
//! they are declared here with prost's derive so no protoc is needed.
//! Samples carry their process's pid, comm, thread, cgroup, container and
//! in-namespace PID as labels.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use crate::model::module::Module;
use crate::model::process::{GroupBy, ProcessContext};
use crate::model::profile::{Frame, FrameKind, Profile, ProfileKind, SourceLine, WAKER_SEPARATOR};

#[derive(Clone, PartialEq, Message)]
pub struct PprofProfile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<PprofSample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct PprofSample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
    #[prost(message, repeated, tag = "3")]
    pub label: Vec<Label>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(int64, tag = "1")]
    pub key: i64,
    #[prost(int64, tag = "2")]
    pub str: i64,
    #[prost(int64, tag = "3")]
    pub num: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// Interns strings, functions, mappings and locations while samples are added.
#[derive(Default)]
struct Builder {
    profile: PprofProfile,
    strings: HashMap<String, i64>,
    functions: HashMap<String, u64>,
    mappings: HashMap<Arc<Module>, u64>,
    kernel_mapping: Option<u64>,
    locations: HashMap<(u64, u64, FrameKind), u64>,
    /// Locations of `--group-by` root frames, by name.
    root_locations: HashMap<String, u64>,
    /// Locations of interpreter frames, by (function, line).
    source_locations: HashMap<(String, u32), u64>,
}

impl Builder {
    fn new() -> Self {
        let mut builder = Builder::default();
        builder.string(""); // index 0 is always the empty string
        builder
    }

    fn string(&mut self, text: &str) -> i64 {
        if let Some(&index) = self.strings.get(text) {
            return index;
        }
        let index = self.profile.string_table.len() as i64;
        self.profile.string_table.push(text.to_string());
        self.strings.insert(text.to_string(), index);
        index
    }

    fn value_type(&mut self, kind: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.string(kind),
            unit: self.string(unit),
        }
    }

    /// The function `name`, with its source file where the name says it
    /// (JIT frames: see `jit_source_file`).
    fn function(&mut self, name: &str, file: Option<&str>, start_line: u32) -> u64 {
        if let Some(&id) = self.functions.get(name) {
            return id;
        }
        let id = self.profile.function.len() as u64 + 1;
        let name_index = self.string(name);
        let filename = file.map_or(0, |file| self.string(file));
        self.profile.function.push(Function {
            id,
            name: name_index,
            system_name: name_index,
            filename,
            start_line: i64::from(start_line),
        });
        self.functions.insert(name.to_string(), id);
        id
    }

    fn mapping(&mut self, frame: &Frame) -> u64 {
        if frame.kind == FrameKind::Kernel {
            if let Some(id) = self.kernel_mapping {
                return id;
            }
            let id = self.profile.mapping.len() as u64 + 1;
            let filename = self.string("[kernel.kallsyms]");
            self.profile.mapping.push(Mapping {
                id,
                memory_start: 0,
                memory_limit: 0,
                file_offset: 0,
                filename,
                build_id: 0,
                has_functions: true,
            });
            self.kernel_mapping = Some(id);
            return id;
        }
        let Some(module) = &frame.module else {
            return 0;
        };
        if let Some(&id) = self.mappings.get(module) {
            return id;
        }
        let id = self.profile.mapping.len() as u64 + 1;
        let filename = self.string(&module.path.to_string_lossy());
        let build_id = self.string(module.build_id.as_deref().unwrap_or(""));
        self.profile.mapping.push(Mapping {
            id,
            memory_start: module.start,
            memory_limit: module.end,
            file_offset: module.file_offset,
            filename,
            build_id,
            has_functions: true,
        });
        self.mappings.insert(module.clone(), id);
        id
    }

    fn location(&mut self, frame: &Frame) -> u64 {
        if let Some(source) = &frame.source {
            return self.source_location(frame, source);
        }
        let mapping_id = self.mapping(frame);
        let key = (mapping_id, frame.address, frame.kind);
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let names: Vec<String> = if frame.functions.is_empty() {
            let module = frame
                .module
                .as_ref()
                .map(|m| format!(" ({})", m.file_name()))
                .unwrap_or_default();
            vec![format!("[unknown]{module}")]
        } else {
            frame.functions.clone()
        };
        // pprof lists inlined functions innermost first, the caller last.
        let line = names
            .iter()
            .rev()
            .map(|name| Line {
                function_id: self.function(
                    name,
                    (frame.kind == FrameKind::Jit)
                        .then(|| jit_source_file(name))
                        .flatten(),
                    0,
                ),
                line: 0,
            })
            .collect();
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id,
            address: frame.address,
            line,
        });
        self.locations.insert(key, id);
        id
    }
}

impl Builder {
    /// The location of a frame read from an interpreter (Python): its
    /// function with file and first line, and the line running; one per
    /// (function, line), with no address.
    fn source_location(&mut self, frame: &Frame, source: &SourceLine) -> u64 {
        let name = frame.functions.first().map_or("[unknown]", String::as_str);
        let key = (name.to_string(), source.line);
        if let Some(&id) = self.source_locations.get(&key) {
            return id;
        }
        let function_id = self.function(name, Some(&source.file), source.function_line);
        let id = self.location_without_address(function_id, source.line);
        self.source_locations.insert(key, id);
        id
    }

    /// A new location of one function (and line, 0 if none) at no address.
    fn location_without_address(&mut self, function_id: u64, line: u32) -> u64 {
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(Location {
            id,
            mapping_id: 0,
            address: 0,
            line: vec![Line {
                function_id,
                line: i64::from(line),
            }],
        });
        id
    }

    /// A location without an address for a `--group-by` root frame.
    fn root_location(&mut self, name: &str) -> u64 {
        if let Some(&id) = self.root_locations.get(name) {
            return id;
        }
        let function_id = self.function(name, None, 0);
        let id = self.location_without_address(function_id, 0);
        self.root_locations.insert(name.to_string(), id);
        id
    }

    fn text_label(&mut self, key: &str, value: &str) -> Label {
        Label {
            key: self.string(key),
            str: self.string(value),
            num: 0,
        }
    }

    /// Labels of where the sample's process ran: cgroup, container,
    /// pod and in-namespace PID, each where known.
    fn context_labels(&mut self, context: &ProcessContext) -> Vec<Label> {
        let mut labels = Vec::new();
        if let Some(cgroup) = &context.cgroup {
            labels.push(self.text_label("cgroup", cgroup));
        }
        if let Some(container) = &context.container {
            labels.push(self.text_label("container_id", &container.id));
            labels.push(self.text_label("container_runtime", container.runtime));
            if let Some(pod) = &container.pod_uid {
                labels.push(self.text_label("pod_uid", pod));
            }
        }
        if let Some(pid) = context.namespace_pid {
            labels.push(Label {
                key: self.string("namespace_pid"),
                str: 0,
                num: pid as i64,
            });
        }
        labels
    }
}

/// The source file a perf-map name gives: V8's `JS:*fn /app/x.js:4:19`
/// (line and column dropped), CPython's `py::fn:/app/x.py`.
fn jit_source_file(name: &str) -> Option<&str> {
    if let Some(rest) = name.strip_prefix("py::") {
        return rest
            .split_once(':')
            .map(|(_, file)| file)
            .filter(|f| !f.is_empty());
    }
    if name.starts_with("JS:") {
        let (_, location) = name.rsplit_once(' ')?;
        let mut file = location;
        for _ in 0..2 {
            if let Some((before, number)) = file.rsplit_once(':') {
                if number.bytes().all(|b| b.is_ascii_digit()) {
                    file = before;
                }
            }
        }
        return (!file.is_empty()).then_some(file);
    }
    None
}

/// Encodes the profile as a pprof message (not yet compressed), with the
/// `group_by` frame at the root of each stack.
pub fn build(profile: &Profile, group_by: GroupBy) -> PprofProfile {
    let mut builder = Builder::new();
    let (value_types, period_type, period, scale): (Vec<ValueType>, ValueType, i64, Vec<i64>) =
        match profile.kind {
            ProfileKind::Cpu { hz } => {
                let period = 1_000_000_000 / hz as i64;
                (
                    vec![
                        builder.value_type("samples", "count"),
                        builder.value_type("cpu", "nanoseconds"),
                    ],
                    builder.value_type("cpu", "nanoseconds"),
                    period,
                    vec![1, period],
                )
            }
            ProfileKind::OffCpu | ProfileKind::OffWake | ProfileKind::Wakeup => {
                let name = match profile.kind {
                    ProfileKind::OffWake => "off_wake",
                    ProfileKind::Wakeup => "wakeup_wait",
                    _ => "off_cpu",
                };
                (
                    vec![builder.value_type(name, "nanoseconds")],
                    builder.value_type(name, "nanoseconds"),
                    1,
                    vec![1000],
                )
            }
        };
    builder.profile.sample_type = value_types;
    builder.profile.period_type = Some(period_type);
    builder.profile.period = period;
    builder.profile.duration_nanos = profile.duration.as_nanos() as i64;
    builder.profile.time_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| (since - profile.duration).as_nanos() as i64)
        .unwrap_or(0);

    let pid_key = builder.string("pid");
    let tid_key = builder.string("thread_id");
    let comm_key = builder.string("comm");
    for sample in &profile.samples {
        // Leaf first: a waker's frames sit above the blocked stack, its
        // name on top and its wakeup call next to the `--` frame, as folded.
        let mut location_id: Vec<u64> = Vec::new();
        if let Some(waker) = &sample.waker {
            location_id.push(builder.root_location(&waker.name));
            for frame in waker.user.iter().chain(waker.kernel.iter()) {
                location_id.push(builder.location(frame));
            }
            location_id.push(builder.root_location(WAKER_SEPARATOR));
        }
        location_id.extend(
            sample
                .user
                .iter()
                .chain(sample.kernel.iter())
                .rev()
                .map(|frame| builder.location(frame)),
        );
        if let Some(root) = group_by.root_frame(sample.context.as_deref()) {
            location_id.push(builder.root_location(&root));
        }
        let mut label = vec![
            Label {
                key: pid_key,
                str: 0,
                num: sample.pid as i64,
            },
            Label {
                key: comm_key,
                str: builder.string(&sample.comm),
                num: 0,
            },
        ];
        if sample.tid != 0 {
            label.push(Label {
                key: tid_key,
                str: 0,
                num: sample.tid as i64,
            });
        }
        if let Some(context) = &sample.context {
            label.extend(builder.context_labels(context));
        }
        builder.profile.sample.push(PprofSample {
            location_id,
            value: scale
                .iter()
                .map(|factor| sample.value as i64 * factor)
                .collect(),
            label,
        });
    }
    builder.profile
}

/// Reads a pprof profile (gzipped or not) as folded stacks, root first
/// (below the `comm` label where samples have one, as bpfscope's do),
/// valued by its first sample type; unknown ids read as `[unknown]`. A
/// gzipped profile that decompresses to more than `max_decoded` bytes is
/// refused as soon as it passes that.
pub fn fold_pprof(bytes: &[u8], max_decoded: u64) -> Result<BTreeMap<String, u64>> {
    let decoded;
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .take(max_decoded + 1)
            .read_to_end(&mut out)
            .context("not a gzipped pprof profile")?;
        if out.len() as u64 > max_decoded {
            anyhow::bail!(
                "the pprof profile decompresses to more than {} MiB",
                max_decoded >> 20
            );
        }
        decoded = out;
        &decoded[..]
    } else {
        bytes
    };
    let profile = PprofProfile::decode(raw).context("not a pprof profile (protobuf)")?;
    let string = |index: i64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| profile.string_table.get(i))
            .map(String::as_str)
            .unwrap_or("[unknown]")
    };
    let functions: HashMap<u64, &str> = profile
        .function
        .iter()
        .map(|function| (function.id, string(function.name)))
        .collect();
    let locations: HashMap<u64, &Location> = profile
        .location
        .iter()
        .map(|location| (location.id, location))
        .collect();
    let mut stacks: BTreeMap<String, u64> = BTreeMap::new();
    for sample in &profile.sample {
        let value = sample.value.first().copied().unwrap_or(0).max(0) as u64;
        // bpfscope's own profiles label samples with the process name, which
        // folded stacks have as their root: put it back, so both compare.
        let mut names: Vec<&str> = sample
            .label
            .iter()
            .find(|label| string(label.key) == "comm" && label.str != 0)
            .map(|label| string(label.str))
            .into_iter()
            .collect();
        // Locations are leaf first, and a location's lines innermost first.
        for id in sample.location_id.iter().rev() {
            match locations.get(id) {
                Some(location) if !location.line.is_empty() => {
                    for line in location.line.iter().rev() {
                        names.push(
                            functions
                                .get(&line.function_id)
                                .copied()
                                .unwrap_or("[unknown]"),
                        );
                    }
                }
                _ => names.push("[unknown]"),
            }
        }
        if names.is_empty() {
            continue;
        }
        let stack = names
            .iter()
            .map(|name| name.replace([';', '\n'], ":"))
            .collect::<Vec<_>>()
            .join(";");
        let total = stacks.entry(stack).or_default();
        *total = total.saturating_add(value);
    }
    Ok(stacks)
}

/// The gzipped protobuf bytes of a `.pb.gz` file.
pub fn render(profile: &Profile, group_by: GroupBy) -> Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(&build(profile, group_by).encode_to_vec())
        .context("compressing pprof")?;
    encoder.finish().context("compressing pprof")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use flate2::read::GzDecoder;

    use super::*;
    use crate::model::profile::WakerContext;
    use crate::output::folded::tests::{frame, profile, sample, woken_reader};

    #[test]
    fn a_waker_sits_above_its_blocked_stack_as_in_folded_output() {
        let mut p = profile(vec![woken_reader(
            WakerContext::Task,
            &["pipe_write", "try_to_wake_up"],
        )]);
        p.kind = ProfileKind::OffWake;
        let from_pprof = fold_pprof(&render(&p, GroupBy::Process).unwrap(), 1 << 30).unwrap();
        // As folded (without its `_[k]` marks), in nanoseconds; only a frame
        // with inlined functions reads outermost first, as a pprof location's
        // lines are the same wherever the address appears.
        assert_eq!(
            from_pprof.into_iter().collect::<Vec<_>>(),
            vec![(
                "reader;main;wait_for_data;schedule;--;try_to_wake_up;pipe_write;send;inlined_send;main;writer".to_string(),
                5000
            )]
        );
    }

    #[test]
    fn reads_its_own_output_back_as_folded_stacks() {
        let p = profile(vec![sample(
            "burn",
            vec![
                frame(FrameKind::User, &["main"]),
                frame(FrameKind::User, &["outer", "inlined"]),
            ],
            vec![],
            3,
        )]);
        let folded = fold_pprof(&render(&p, GroupBy::Process).unwrap(), 1 << 30).unwrap();
        assert_eq!(folded.get("burn;main;outer;inlined"), Some(&3));
        assert!(fold_pprof(b"\x1f\x8bjunk", 1 << 30).is_err());
    }

    #[test]
    fn jit_names_give_their_source_files() {
        assert_eq!(
            jit_source_file("JS:*burnThree /app/split.js:4:19"),
            Some("/app/split.js")
        );
        assert_eq!(
            jit_source_file("py::spin:/app/split.py"),
            Some("/app/split.py")
        );
        assert_eq!(jit_source_file("void Split.spin(int)"), None);
    }

    #[test]
    fn round_trips_and_shares_functions() {
        let p = profile(vec![
            sample(
                "burn",
                vec![
                    frame(FrameKind::User, &["main"]),
                    frame(FrameKind::User, &["outer", "inlined"]),
                ],
                vec![frame(FrameKind::Kernel, &["irq_handler"])],
                5,
            ),
            sample("burn", vec![frame(FrameKind::User, &["main"])], vec![], 2),
        ]);
        let gz = render(&p, GroupBy::Process).unwrap();
        let mut bytes = Vec::new();
        GzDecoder::new(&gz[..]).read_to_end(&mut bytes).unwrap();
        let decoded = PprofProfile::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.string_table[0], "");
        assert_eq!(decoded.sample.len(), 2);
        assert_eq!(decoded.sample[0].value, vec![5, 5 * (1_000_000_000 / 99)]);
        assert_eq!(decoded.period, 1_000_000_000 / 99);
        let name = |id: u64| {
            let function = decoded.function.iter().find(|f| f.id == id).unwrap();
            decoded.string_table[function.name as usize].clone()
        };
        // Leaf first: kernel leaf, then the inlined user frame (innermost line first).
        let leaf = decoded
            .location
            .iter()
            .find(|l| l.id == decoded.sample[0].location_id[0])
            .unwrap();
        assert_eq!(name(leaf.line[0].function_id), "irq_handler");
        let user_leaf = decoded
            .location
            .iter()
            .find(|l| l.id == decoded.sample[0].location_id[1])
            .unwrap();
        let names: Vec<String> = user_leaf
            .line
            .iter()
            .map(|line| name(line.function_id))
            .collect();
        assert_eq!(names, vec!["inlined", "outer"]);
        // "main" is one function and one location shared by both samples.
        assert_eq!(
            decoded
                .function
                .iter()
                .filter(|f| decoded.string_table[f.name as usize] == "main")
                .count(),
            1
        );
        assert_eq!(
            decoded.sample[0].location_id.last(),
            decoded.sample[1].location_id.last()
        );
        let kernel_mapping = decoded
            .mapping
            .iter()
            .find(|m| m.id == leaf.mapping_id)
            .unwrap();
        assert_eq!(
            decoded.string_table[kernel_mapping.filename as usize],
            "[kernel.kallsyms]"
        );
    }
}
