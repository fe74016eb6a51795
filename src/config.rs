//! Settings files: a TOML file (`stowage.toml`) that holds the flags of a command by
//! their long names (`max-request-mb = 64`, `no-auth = true`; `_` may stand for `-`).
//!
//! Nothing here knows a single flag. A setting is any argument of the subcommand that
//! has a long name, as clap defines it, so a flag added to `serve` is a setting of the
//! file with no code for it. A subcommand has a settings file when it has an argument
//! with the id [`FILE_ARG`] (`--config PATH`, or its environment variable).
//!
//! The invariant: a file never outranks the command line or the environment. The
//! command line is parsed once; each setting of the file whose flag the command line
//! and the environment left alone is then written as that flag, ahead of the user's own
//! arguments, and clap parses the whole again. So every check clap makes (types, ranges,
//! possible values, conflicts) holds for the file as for the command line, and the
//! order is: flag, then environment variable, then file, then the built-in default.
//! Before that, clap parses the file's settings alone, so that a bad one is an error
//! even where a flag outranks it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::de::{DeTable, DeValue};

/// The id of the argument that names a settings file.
pub const FILE_ARG: &str = "config";

/// What stands for a secret in what [`Parsed::describe`] prints and in error messages.
pub const MASK: &str = "********";

/// Variables that [`Parsed::describe`] shows besides the settings, when set and not
/// bound to one: what the store and the logs read from the environment.
const ENVIRONMENT_PREFIXES: [&str; 3] = ["STOWAGE_", "AWS_", "RUST_LOG"];

/// Why a command line and its settings file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line itself is wrong, or asks for help or the version: clap's own
    /// answer, to be shown with [`clap::Error::exit`].
    #[error(transparent)]
    CommandLine(#[from] clap::Error),
    /// The settings file could not be read.
    #[error("cannot read the settings file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The settings file is not TOML.
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// A key that is no setting (a typo, most likely).
    #[error("{}:{line}: unknown setting `{key}`{hint}", path.display())]
    Unknown {
        path: PathBuf,
        line: usize,
        key: String,
        /// The closest setting, or why the key cannot be set, as a sentence's end.
        hint: String,
    },
    /// A setting of the wrong type or with a bad value.
    #[error("{}:{line}: `{key}`: {message}", path.display())]
    Value {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    /// Settings that do not go together, with each other or with the command line.
    #[error("{}: {message}", path.display())]
    Together { path: PathBuf, message: String },
}

/// A command line read with its settings file.
#[derive(Debug)]
pub struct Parsed {
    /// The matches of the command line with the file's settings in: for
    /// [`clap::FromArgMatches`].
    pub matches: ArgMatches,
    /// The command, built (global arguments propagated to subcommands).
    command: Command,
    file: Option<SettingsFile>,
}

/// The settings file that was read.
#[derive(Debug)]
struct SettingsFile {
    path: PathBuf,
    /// Where its name came from: `flag`, or `env NAME`.
    named_by: String,
    settings: Vec<FileSetting>,
}

/// One key of a settings file.
#[derive(Debug)]
struct FileSetting {
    /// The id of its argument.
    id: String,
    /// The argument's long name.
    long: String,
    /// The key as the file spells it.
    written: String,
    line: usize,
    /// The arguments it stands for.
    tokens: Vec<OsString>,
    /// Whether it is in force: false when a flag or the environment set its argument.
    in_force: bool,
    /// Its values that must not be shown, each with what may be shown instead.
    secrets: Vec<(String, String)>,
}

/// How an argument takes its values, as far as a settings file cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A flag without a value (`--no-auth`); given, it sets `on`.
    Switch { on: bool },
    /// A flag counted (`-vvv`).
    Count,
    /// One value or, unless `list` is [`List::One`], any number of them.
    Values { elem: Elem, list: List },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    One,
    /// The flag once per value (`--fsck-ignore a --fsck-ignore b`).
    Repeated,
    /// All values after one flag (`--pair a b`).
    Together,
}

/// The TOML type a value takes, from the type clap parses it into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    Bool,
    Integer,
    Float,
    Text,
}

impl Elem {
    fn of(arg: &Arg) -> Elem {
        use std::any::TypeId;
        use std::num::{NonZeroU8, NonZeroU16, NonZeroU32, NonZeroU64, NonZeroUsize};
        let id = arg.get_value_parser().type_id();
        let integers = [
            TypeId::of::<u8>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
            TypeId::of::<usize>(),
            TypeId::of::<i8>(),
            TypeId::of::<i16>(),
            TypeId::of::<i32>(),
            TypeId::of::<i64>(),
            TypeId::of::<isize>(),
            TypeId::of::<NonZeroU8>(),
            TypeId::of::<NonZeroU16>(),
            TypeId::of::<NonZeroU32>(),
            TypeId::of::<NonZeroU64>(),
            TypeId::of::<NonZeroUsize>(),
        ];
        if id == TypeId::of::<bool>() {
            Elem::Bool
        } else if integers.iter().any(|t| id == *t) {
            Elem::Integer
        } else if id == TypeId::of::<f64>() || id == TypeId::of::<f32>() {
            Elem::Float
        } else {
            Elem::Text
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Elem::Bool => "true or false",
            Elem::Integer => "an integer",
            Elem::Float => "a number",
            Elem::Text => "a string",
        }
    }
}

/// How `arg` takes values, or `None` when it is no setting (`--help`, `--version`).
fn shape(arg: &Arg) -> Option<Shape> {
    let several = arg.get_num_args().is_some_and(|n| n.max_values() > 1);
    match arg.get_action() {
        ArgAction::SetTrue => Some(Shape::Switch { on: true }),
        ArgAction::SetFalse => Some(Shape::Switch { on: false }),
        ArgAction::Count => Some(Shape::Count),
        ArgAction::Set => Some(Shape::Values {
            elem: Elem::of(arg),
            list: if several { List::Together } else { List::One },
        }),
        ArgAction::Append => Some(Shape::Values {
            elem: Elem::of(arg),
            list: List::Repeated,
        }),
        _ => None,
    }
}

/// The settings of `command`: its arguments with a long name that take a value or are
/// switches, except the one naming the settings file. `command` must be built
/// ([`Command::build`]) for global arguments to be among them.
fn settings(command: &Command) -> impl Iterator<Item = (&Arg, Shape)> {
    command.get_arguments().filter_map(|arg| {
        if arg.get_long().is_none() || arg.get_id() == FILE_ARG {
            return None;
        }
        shape(arg).map(|shape| (arg, shape))
    })
}

/// The long names of the settings of `command` (built), in the order clap defines them.
pub fn setting_names(command: &Command) -> Vec<&str> {
    settings(command)
        .filter_map(|(arg, _)| arg.get_long())
        .collect()
}

/// Parses `argv` (with the program name first) as `command`; for a subcommand with a
/// settings file (the argument [`FILE_ARG`], given or from its environment variable),
/// the file's settings fill in whatever the command line and the environment left to
/// its default.
pub fn parse<I, T>(mut command: Command, argv: I) -> Result<Parsed, Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    command.build();
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let first = command.clone().try_get_matches_from(argv.clone())?;
    let Some((name, sub_matches)) = first.subcommand() else {
        return Ok(Parsed::without_file(first, command));
    };
    let Some(sub) = command.find_subcommand(name) else {
        return Ok(Parsed::without_file(first, command));
    };
    let Some((path, named_by)) = file_named(sub, sub_matches) else {
        return Ok(Parsed::without_file(first, command));
    };
    let text = std::fs::read_to_string(&path).map_err(|error| Error::Read {
        path: path.clone(),
        error,
    })?;
    let mut settings = read_settings(sub, &path, &text)?;
    // The file by itself first, so that a bad value is an error even where a flag or
    // the environment outranks it (a required flag may be left to the command line).
    let bin = argv.first().cloned().unwrap_or_default();
    let alone = [bin, OsString::from(sub.get_name())]
        .into_iter()
        .chain(settings.iter().flat_map(|s| s.tokens.iter().cloned()));
    if let Err(e) = command.clone().try_get_matches_from(alone)
        && e.kind() != ErrorKind::MissingRequiredArgument
    {
        return Err(file_error(&e, &path, &settings, true));
    }
    for setting in &mut settings {
        setting.in_force = !matches!(
            sub_matches.value_source(&setting.id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
    }
    let from_file = settings
        .iter()
        .filter(|s| s.in_force)
        .flat_map(|s| s.tokens.iter().cloned());
    let full: Vec<OsString> = match subcommand_index(&command, sub, &argv) {
        Some(at) => argv[..=at]
            .iter()
            .cloned()
            .chain(from_file)
            .chain(argv[at + 1..].iter().cloned())
            .collect(),
        None => argv.iter().cloned().chain(from_file).collect(),
    };
    let matches = command
        .clone()
        .try_get_matches_from(full)
        .map_err(|e| file_error(&e, &path, &settings, false))?;
    Ok(Parsed {
        matches,
        command,
        file: Some(SettingsFile {
            path,
            named_by,
            settings,
        }),
    })
}

impl Parsed {
    fn without_file(matches: ArgMatches, command: Command) -> Parsed {
        Parsed {
            matches,
            command,
            file: None,
        }
    }

    /// The settings file read, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }

    /// How many of the file's settings are in force (not outranked by a flag or the
    /// environment).
    pub fn file_settings_in_force(&self) -> usize {
        self.file
            .as_ref()
            .map_or(0, |f| f.settings.iter().filter(|s| s.in_force).count())
    }

    /// The settings the subcommand runs with, as TOML a settings file takes, each with
    /// where it came from (`flag`, `env NAME`, `file`, `default`) as a comment; secrets
    /// masked. Then the variables of the environment that the store and the logs read.
    /// `of` names what runs with them (`stowage serve`).
    pub fn describe(&self, of: &str) -> String {
        self.describe_with(of, std::env::vars_os())
    }

    fn describe_with(
        &self,
        of: &str,
        environment: impl Iterator<Item = (OsString, OsString)>,
    ) -> String {
        let Some((name, matches)) = self.matches.subcommand() else {
            return String::new();
        };
        let Some(sub) = self.command.find_subcommand(name) else {
            return String::new();
        };
        let mut out = format!(
            "# The settings of `{of}`, as a settings file takes them. Each comes from a\n\
             # flag, else the environment, else the settings file, else the default.\n"
        );
        match &self.file {
            Some(file) => out.push_str(&format!(
                "# Settings file: {} ({})\n",
                file.path.display(),
                file.named_by
            )),
            None => out.push_str("# Settings file: none\n"),
        }
        let mut bound = Vec::new();
        for arg in sub.get_arguments() {
            if let Some(env) = arg.get_env() {
                bound.push(env.to_owned());
            }
        }
        for (arg, shape) in settings(sub) {
            let id = arg.get_id().as_str();
            let long = arg.get_long().unwrap_or(id);
            let in_file = self
                .file
                .as_ref()
                .and_then(|f| f.settings.iter().find(|s| s.id == id));
            let mut origin = match (matches.value_source(id), in_file) {
                (_, Some(s)) if s.in_force => "file".to_owned(),
                (Some(ValueSource::CommandLine), _) => "flag".to_owned(),
                (Some(ValueSource::EnvVariable), _) => format!(
                    "env {}",
                    arg.get_env().unwrap_or_default().to_string_lossy()
                ),
                _ => "default".to_owned(),
            };
            if in_file.is_some_and(|s| !s.in_force) {
                origin.push_str(", over the file's");
            }
            let value = current(matches, arg, shape);
            let masked = value.is_some() && value != current_unmasked(matches, arg, shape);
            if masked {
                origin.push_str("; masked");
            }
            match value {
                Some(value) => out.push_str(&format!("{long} = {value}  # {origin}\n")),
                None => out.push_str(&format!("# {long} is not set  # {origin}\n")),
            }
        }
        let mut seen: Vec<(String, String)> = environment
            .filter(|(name, _)| !bound.contains(name))
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                ENVIRONMENT_PREFIXES
                    .iter()
                    .any(|p| name.starts_with(p))
                    .then(|| {
                        let value = mask(&name, &value.to_string_lossy()).into_owned();
                        (name, value)
                    })
            })
            .collect();
        seen.sort();
        if !seen.is_empty() {
            out.push_str("\n# Read from the environment (not settings of the file):\n");
            for (name, value) in seen {
                out.push_str(&format!("# {name}={}\n", toml::Value::String(value)));
            }
        }
        out
    }
}

/// The value `arg` has in `matches`, as TOML, secrets masked.
fn current(matches: &ArgMatches, arg: &Arg, shape: Shape) -> Option<toml::Value> {
    value_of(matches, arg, shape, true)
}

fn current_unmasked(matches: &ArgMatches, arg: &Arg, shape: Shape) -> Option<toml::Value> {
    value_of(matches, arg, shape, false)
}

fn value_of(matches: &ArgMatches, arg: &Arg, shape: Shape, masked: bool) -> Option<toml::Value> {
    let id = arg.get_id().as_str();
    match shape {
        Shape::Switch { .. } => matches
            .try_get_one::<bool>(id)
            .ok()
            .flatten()
            .map(|b| toml::Value::Boolean(*b)),
        Shape::Count => matches
            .try_get_one::<u8>(id)
            .ok()
            .flatten()
            .map(|n| toml::Value::Integer(i64::from(*n))),
        Shape::Values { elem, list } => {
            let name = arg.get_long().unwrap_or(id);
            let values: Vec<toml::Value> = matches
                .try_get_raw(id)
                .ok()
                .flatten()?
                .map(|raw| {
                    let raw = raw.to_string_lossy();
                    let typed = match elem {
                        Elem::Bool => raw.parse().ok().map(toml::Value::Boolean),
                        Elem::Integer => raw.parse().ok().map(toml::Value::Integer),
                        Elem::Float => raw.parse().ok().map(toml::Value::Float),
                        Elem::Text => None,
                    };
                    typed.unwrap_or_else(|| {
                        let text = if masked { mask(name, &raw) } else { raw };
                        toml::Value::String(text.into_owned())
                    })
                })
                .collect();
            match list {
                List::One => values.into_iter().next(),
                List::Repeated | List::Together => Some(toml::Value::Array(values)),
            }
        }
    }
}

/// The settings file `sub` names in `matches`, and where the name came from.
fn file_named(sub: &Command, matches: &ArgMatches) -> Option<(PathBuf, String)> {
    let arg = sub.get_arguments().find(|a| a.get_id() == FILE_ARG)?;
    let raw = matches.try_get_raw(FILE_ARG).ok().flatten()?.next()?;
    let named_by = match matches.value_source(FILE_ARG) {
        Some(ValueSource::EnvVariable) => format!(
            "env {}",
            arg.get_env().unwrap_or_default().to_string_lossy()
        ),
        _ => "flag".to_owned(),
    };
    Some((PathBuf::from(raw), named_by))
}

/// Where `sub` stands in `argv`: the first word naming it that is not the value of an
/// option before it.
fn subcommand_index(command: &Command, sub: &Command, argv: &[OsString]) -> Option<usize> {
    let names: Vec<&str> = std::iter::once(sub.get_name())
        .chain(sub.get_all_aliases())
        .collect();
    let takes_value = |arg: &Arg| arg.get_action().takes_values();
    let mut i = 1;
    while i < argv.len() {
        let word = argv[i].to_string_lossy();
        if names.contains(&word.as_ref()) {
            return Some(i);
        }
        if word == "--" {
            return None;
        }
        let option = if let Some(long) = word.strip_prefix("--") {
            (!long.contains('='))
                .then(|| command.get_arguments().find(|a| a.get_long() == Some(long)))
                .flatten()
        } else if let Some(short) = word.strip_prefix('-') {
            let mut chars = short.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => command.get_arguments().find(|a| a.get_short() == Some(c)),
                _ => None,
            }
        } else {
            None
        };
        if option.is_some_and(takes_value) {
            i += 1;
        }
        i += 1;
    }
    None
}

/// The settings of the file at `path` (its `text`), checked against `sub`'s arguments.
fn read_settings(sub: &Command, path: &Path, text: &str) -> Result<Vec<FileSetting>, Error> {
    let table = DeTable::parse(text).map_err(|e| Error::Syntax {
        path: path.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let mut entries: Vec<_> = table.get_ref().iter().collect();
    entries.sort_by_key(|(key, _)| key.span().start);
    let mut out: Vec<FileSetting> = Vec::new();
    for (key, value) in entries {
        let written = key.get_ref().to_string();
        let line = line_of(text, key.span().start);
        let wanted = written.replace('_', "-");
        let found = settings(sub).find(|(arg, _)| {
            arg.get_long() == Some(wanted.as_str())
                || arg
                    .get_all_aliases()
                    .is_some_and(|aliases| aliases.contains(&wanted.as_str()))
        });
        let Some((arg, shape)) = found else {
            return Err(Error::Unknown {
                path: path.to_owned(),
                line,
                hint: hint(sub, &wanted, value.get_ref()),
                key: written,
            });
        };
        let long = arg.get_long().unwrap_or_default().to_owned();
        let value_error = |message: String| Error::Value {
            path: path.to_owned(),
            line,
            key: written.clone(),
            message,
        };
        if let Some(first) = out.iter().find(|s| s.id == arg.get_id().as_str()) {
            return Err(value_error(format!(
                "is `{}` again (line {})",
                first.written, first.line
            )));
        }
        let (tokens, values) = tokens(arg, &long, shape, value.get_ref()).map_err(value_error)?;
        let secrets = values
            .into_iter()
            .filter_map(|v| {
                let shown = mask(&long, &v).into_owned();
                (shown != v).then_some((v, shown))
            })
            .collect();
        out.push(FileSetting {
            id: arg.get_id().to_string(),
            long,
            written,
            line,
            tokens,
            in_force: true,
            secrets,
        });
    }
    Ok(out)
}

/// The command-line words that say what `value` says for `arg`, and its values as
/// words; or why it cannot.
fn tokens(
    arg: &Arg,
    long: &str,
    shape: Shape,
    value: &DeValue<'_>,
) -> Result<(Vec<OsString>, Vec<String>), String> {
    let flag = || OsString::from(format!("--{long}"));
    match (shape, value) {
        (Shape::Switch { on }, DeValue::Boolean(b)) => {
            let tokens = if *b == on { vec![flag()] } else { Vec::new() };
            Ok((tokens, Vec::new()))
        }
        (Shape::Switch { .. }, other) => {
            Err(format!("must be true or false, not {}", type_name(other)))
        }
        (Shape::Count, DeValue::Integer(n)) => {
            let n = integer(n)?;
            let n = u8::try_from(n).map_err(|_| format!("{n} is not a count from 0 to 255"))?;
            Ok((vec![flag(); usize::from(n)], Vec::new()))
        }
        (Shape::Count, other) => Err(format!("must be an integer, not {}", type_name(other))),
        (Shape::Values { elem, list }, DeValue::Array(items)) => {
            if list == List::One {
                return Err(format!("takes one value ({}), not a list", elem.expected()));
            }
            let values = items
                .iter()
                .map(|item| scalar(item.get_ref(), elem).map_err(|e| format!("in the list: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            if values.is_empty() && !arg.get_default_values().is_empty() {
                return Err(format!(
                    "is an empty list, which the command line cannot say either; leave it \
                     out for the default ({})",
                    defaults(arg).join(", ")
                ));
            }
            Ok((words(long, list, &values), values))
        }
        (Shape::Values { elem, list }, value) => {
            let one = scalar(value, elem)?;
            let values = vec![one];
            Ok((words(long, list, &values), values))
        }
    }
}

/// `--long=value` for each value, or `--long v1 v2` for values taken together.
fn words(long: &str, list: List, values: &[String]) -> Vec<OsString> {
    match list {
        List::One | List::Repeated => values
            .iter()
            .map(|v| OsString::from(format!("--{long}={v}")))
            .collect(),
        List::Together => std::iter::once(OsString::from(format!("--{long}")))
            .chain(values.iter().map(OsString::from))
            .collect(),
    }
}

/// One value as the command line would give it, if it is of the type `elem` wants.
fn scalar(value: &DeValue<'_>, elem: Elem) -> Result<String, String> {
    match (elem, value) {
        (Elem::Bool, DeValue::Boolean(b)) => Ok(b.to_string()),
        (Elem::Integer | Elem::Float, DeValue::Integer(n)) => Ok(integer(n)?.to_string()),
        (Elem::Float, DeValue::Float(f)) => Ok(f.as_str().to_owned()),
        (Elem::Text, DeValue::String(s)) => Ok(s.to_string()),
        (elem, other) => Err(format!(
            "must be {}, not {}",
            elem.expected(),
            type_name(other)
        )),
    }
}

fn integer(n: &toml::de::DeInteger<'_>) -> Result<i128, String> {
    i128::from_str_radix(n.as_str(), n.radix()).map_err(|_| "the integer is too large".to_owned())
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a number with a fraction",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

/// The end of the message for an unknown key `wanted` (`-` for `_`): the setting it
/// comes closest to, or why it cannot be set.
fn hint(sub: &Command, wanted: &str, value: &DeValue<'_>) -> String {
    if sub.get_arguments().any(|a| a.get_long() == Some(wanted)) {
        return format!(": `--{wanted}` is no setting of a file");
    }
    if matches!(value, DeValue::Table(_)) {
        return " (settings are keys at the top of the file, not tables)".to_owned();
    }
    let closest = settings(sub)
        .filter_map(|(arg, _)| arg.get_long())
        .map(|long| (distance(long, wanted), long))
        .min();
    match closest {
        Some((d, long)) if d <= 3 && d < wanted.len() => format!(" (did you mean `{long}`?)"),
        _ => String::new(),
    }
}

/// Levenshtein distance between `a` and `b`.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

/// The 1-based line of byte `offset` of `text`.
fn line_of(text: &str, offset: usize) -> usize {
    1 + text
        .as_bytes()
        .iter()
        .take(offset)
        .filter(|b| **b == b'\n')
        .count()
}

/// Why the command line with the file's settings in (or with `alone`, the file's settings
/// alone) does not parse, naming the setting at fault when clap names its flag.
fn file_error(e: &clap::Error, path: &Path, settings: &[FileSetting], alone: bool) -> Error {
    let mut message = clap_message(e);
    for (secret, shown) in settings.iter().flat_map(|s| &s.secrets) {
        message = message.replace(secret.as_str(), shown);
    }
    let culprit = e
        .get(ContextKind::InvalidArg)
        .map(|arg| arg.to_string())
        .and_then(|arg| {
            let long = arg.split([' ', '=']).next()?.strip_prefix("--")?.to_owned();
            settings
                .iter()
                .find(|s| (alone || s.in_force) && s.long == long)
        });
    let about_a_value = matches!(
        e.kind(),
        ErrorKind::InvalidValue
            | ErrorKind::ValueValidation
            | ErrorKind::TooManyValues
            | ErrorKind::TooFewValues
            | ErrorKind::WrongNumberOfValues
            | ErrorKind::NoEquals
            | ErrorKind::InvalidUtf8
    );
    match culprit {
        Some(setting) if about_a_value => Error::Value {
            path: path.to_owned(),
            line: setting.line,
            key: setting.written.clone(),
            message,
        },
        _ if alone => Error::Together {
            path: path.to_owned(),
            message: format!("its settings do not go together: {message}"),
        },
        _ => Error::Together {
            path: path.to_owned(),
            message: format!(
                "its settings and the command line or the environment do not go together: \
                 {message}"
            ),
        },
    }
}

/// clap's message without its `error:` and its usage lines.
fn clap_message(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let lines: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    let message = lines.join(" ");
    message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .to_owned()
}

/// Whether a setting or variable called `name` holds a secret: its words (split at `-`
/// and `_`) hold a token, password, secret or credentials, or an access, API, private,
/// session or signing key.
pub fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let words: Vec<&str> = lower.split(['-', '_']).collect();
    words.iter().any(|w| {
        matches!(
            *w,
            "token" | "tokens" | "password" | "passwd" | "secret" | "credential" | "credentials"
        )
    }) || words.windows(2).any(|pair| {
        pair[1] == "key"
            && matches!(
                pair[0],
                "access" | "api" | "private" | "session" | "signing" | "secret"
            )
    })
}

/// `value` as it may be shown for the setting or variable `name`: all of it masked when
/// the name says it is a secret, else with the user-info of any URL in it
/// (`s3://key:secret@bucket`) masked.
pub fn mask<'a>(name: &str, value: &'a str) -> std::borrow::Cow<'a, str> {
    if is_secret_name(name) && !value.is_empty() {
        return MASK.into();
    }
    mask_user_info(value)
}

/// `value` with the user-info of each URL in it masked.
fn mask_user_info(value: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::new();
    let mut rest = value;
    let mut changed = false;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail.find(['/', '?', '#', ' ', ',']).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(user_end) => {
                out.push_str(MASK);
                out.push_str(&authority[user_end..]);
                changed = true;
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    if !changed {
        return value.into();
    }
    out.push_str(rest);
    out.into()
}

/// `arg`'s default values as words.
fn defaults(arg: &Arg) -> Vec<String> {
    arg.get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect()
}

/// A Markdown table of every flag of `command` (built) with a long name: flag (and key
/// of the settings file), environment variable, default and meaning (its help).
pub fn table(command: &Command) -> String {
    let mut out =
        String::from("| flag and key | environment | default | meaning |\n|---|---|---|---|\n");
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let Some(shape) = shape(arg) else { continue };
        let flag = match shape {
            Shape::Values {
                list: List::Repeated | List::Together,
                ..
            } => format!("`--{long}` (a list)"),
            _ => format!("`--{long}`"),
        };
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let default = match shape {
            Shape::Switch { on } => format!("`{}`", !on),
            Shape::Count => "`0`".to_owned(),
            Shape::Values { .. } if arg.get_default_values().is_empty() => "none".to_owned(),
            Shape::Values { .. } => defaults(arg)
                .iter()
                .map(|d| format!("`{d}`"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let mut meaning = help.split_whitespace().collect::<Vec<_>>().join(" ");
        if arg.get_id() == FILE_ARG {
            meaning.push_str(" (not a key of the file)");
        }
        out.push_str(&format!(
            "| {flag} | {env} | {default} | {} |\n",
            meaning
                .replace('|', "\\|")
                .replace('<', "\\<")
                .replace('>', "\\>")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::value_parser;
    use std::net::SocketAddr;

    /// A command shaped like stowage's: a global option, and two subcommands with the
    /// same arguments, of every kind a setting can be.
    fn cli() -> Command {
        Command::new("app")
            .arg(
                Arg::new("log-format")
                    .long("log-format")
                    .global(true)
                    .value_parser(["text", "json"])
                    .default_value("text"),
            )
            .subcommand(server(Command::new("serve")))
            .subcommand(server(Command::new("config")))
            .subcommand(Command::new("other").arg(Arg::new("x").long("x")))
    }

    fn server(command: Command) -> Command {
        command
            .arg(
                Arg::new(FILE_ARG)
                    .long("config")
                    .value_parser(value_parser!(PathBuf)),
            )
            .arg(
                Arg::new("listen")
                    .long("listen")
                    .value_parser(value_parser!(SocketAddr))
                    .default_value("127.0.0.1:8080"),
            )
            .arg(
                Arg::new("max-mb")
                    .long("max-mb")
                    .value_parser(value_parser!(u32))
                    .default_value("64"),
            )
            .arg(
                Arg::new("no-auth")
                    .long("no-auth")
                    .action(ArgAction::SetTrue),
            )
            // An id that differs from the long name, and a switch that turns off.
            .arg(
                Arg::new("checks")
                    .long("no-checks")
                    .action(ArgAction::SetFalse),
            )
            .arg(
                Arg::new("direct")
                    .long("direct")
                    .value_parser(value_parser!(bool))
                    .num_args(0..=1)
                    .default_missing_value("true")
                    .default_value("true"),
            )
            .arg(Arg::new("ignore").long("ignore").action(ArgAction::Append))
            .arg(
                Arg::new("proxy")
                    .long("proxy")
                    .action(ArgAction::Append)
                    .default_values(["127.0.0.1/32", "::1/128"]),
            )
            .arg(
                Arg::new("verbose")
                    .long("verbose")
                    .short('v')
                    .action(ArgAction::Count),
            )
            // PATH is set wherever tests run, so this one has a value from the
            // environment (tests cannot set variables: that would be unsafe).
            .arg(Arg::new("search-path").long("search-path").env("PATH"))
            .arg(
                Arg::new("store")
                    .long("store")
                    .default_value("file://./data"),
            )
            .arg(Arg::new("api-token").long("api-token"))
            .arg(
                Arg::new("geometric")
                    .long("geometric")
                    .action(ArgAction::SetTrue)
                    .conflicts_with("prune"),
            )
            .arg(Arg::new("prune").long("prune").action(ArgAction::SetTrue))
    }

    struct File {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn file(text: &str) -> File {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("stowage.toml");
        std::fs::write(&path, text).expect("write settings");
        File { _dir: dir, path }
    }

    /// `app serve --config FILE ARGS`.
    fn serve(file: &File, args: &[&str]) -> Result<Parsed, Error> {
        let mut argv = vec!["app".to_owned(), "serve".to_owned(), "--config".to_owned()];
        argv.push(file.path.display().to_string());
        argv.extend(args.iter().map(|a| a.to_string()));
        parse(cli(), argv)
    }

    fn sub(parsed: &Parsed) -> &ArgMatches {
        parsed.matches.subcommand().expect("a subcommand").1
    }

    fn one<T: Clone + Send + Sync + 'static>(parsed: &Parsed, id: &str) -> T {
        sub(parsed)
            .get_one::<T>(id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} has a value"))
    }

    fn many(parsed: &Parsed, id: &str) -> Vec<String> {
        sub(parsed)
            .get_many::<String>(id)
            .map(|v| v.cloned().collect())
            .unwrap_or_default()
    }

    #[test]
    fn a_file_sets_what_flags_set() {
        let f = file(
            "listen = \"0.0.0.0:9000\"\nmax-mb = 7\nno_auth = true\nno-checks = false\n\
             direct = false\nignore = [\"a\", \"b\"]\nproxy = \"10.0.0.0/8\"\nverbose = 2\n\
             search-path = \"/opt\"\n",
        );
        let parsed = serve(&f, &[]).expect("parses");
        assert_eq!(
            one::<SocketAddr>(&parsed, "listen"),
            "0.0.0.0:9000".parse::<SocketAddr>().expect("address")
        );
        assert_eq!(one::<u32>(&parsed, "max-mb"), 7);
        assert!(one::<bool>(&parsed, "no-auth"));
        assert!(!one::<bool>(&parsed, "checks"));
        assert!(!one::<bool>(&parsed, "direct"));
        assert_eq!(many(&parsed, "ignore"), ["a", "b"]);
        assert_eq!(many(&parsed, "proxy"), ["10.0.0.0/8"]);
        assert_eq!(one::<u8>(&parsed, "verbose"), 2);
        // search-path has a value from the environment (PATH), which outranks the file.
        assert_ne!(one::<String>(&parsed, "search-path"), "/opt");
        assert_eq!(parsed.file(), Some(f.path.as_path()));
        assert_eq!(parsed.file_settings_in_force(), 8);
    }

    #[test]
    fn without_a_file_the_defaults_stand() {
        let parsed = parse(cli(), ["app", "serve"]).expect("parses");
        assert_eq!(one::<u32>(&parsed, "max-mb"), 64);
        assert!(!one::<bool>(&parsed, "no-auth"));
        assert_eq!(many(&parsed, "proxy"), ["127.0.0.1/32", "::1/128"]);
        assert_eq!(parsed.file(), None);
        // A subcommand without a settings file is parsed as it is.
        let parsed = parse(cli(), ["app", "other", "--x", "1"]).expect("parses");
        assert_eq!(one::<String>(&parsed, "x"), "1");
    }

    #[test]
    fn switches_set_to_their_default_change_nothing() {
        let f = file("no-auth = false\nno-checks = true\n");
        let parsed = serve(&f, &[]).expect("parses");
        assert!(!one::<bool>(&parsed, "no-auth"));
        assert!(one::<bool>(&parsed, "checks"));
        assert!(
            parsed
                .describe("app serve")
                .contains("no-auth = false  # file\n")
        );
    }

    #[test]
    fn a_flag_outranks_the_file() {
        let f = file("max-mb = 7\nignore = [\"a\"]\nno-auth = true\ndirect = false\n");
        let parsed = serve(
            &f,
            &["--max-mb", "9", "--ignore", "c", "--direct", "--no-auth"],
        )
        .expect("parses");
        assert_eq!(one::<u32>(&parsed, "max-mb"), 9);
        assert_eq!(many(&parsed, "ignore"), ["c"]);
        assert!(one::<bool>(&parsed, "direct"));
        assert_eq!(parsed.file_settings_in_force(), 0);
        let text = parsed.describe("app serve");
        assert!(
            text.contains("max-mb = 9  # flag, over the file's\n"),
            "{text}"
        );
        assert!(
            text.contains("ignore = [\"c\"]  # flag, over the file's\n"),
            "{text}"
        );
    }

    #[test]
    fn the_environment_outranks_the_file() {
        let path = std::env::var("PATH").expect("PATH is set");
        let f = file("search-path = \"/nowhere\"\n");
        let parsed = serve(&f, &[]).expect("parses");
        assert_eq!(one::<String>(&parsed, "search-path"), path);
        let text = parsed.describe_with("app serve", std::iter::empty());
        assert!(text.contains("# env PATH, over the file's\n"), "{text}");
        // And a flag outranks the environment.
        let parsed = serve(&f, &["--search-path", "/flag"]).expect("parses");
        assert_eq!(one::<String>(&parsed, "search-path"), "/flag");
    }

    #[test]
    fn global_options_and_options_before_the_subcommand() {
        let f = file("log-format = \"json\"\nmax-mb = 5\n");
        let parsed = serve(&f, &[]).expect("parses");
        assert_eq!(
            parsed
                .matches
                .get_one::<String>("log-format")
                .map(String::as_str),
            Some("json")
        );
        // Given before the subcommand, the global option outranks the file, and the
        // file's settings still go after the subcommand's name.
        let argv = [
            "app",
            "--log-format",
            "text",
            "serve",
            "--config",
            f.path.to_str().expect("utf-8 path"),
        ];
        let parsed = parse(cli(), argv).expect("parses");
        assert_eq!(
            parsed
                .matches
                .get_one::<String>("log-format")
                .map(String::as_str),
            Some("text")
        );
        assert_eq!(one::<u32>(&parsed, "max-mb"), 5);
    }

    fn error(text: &str, args: &[&str]) -> String {
        let f = file(text);
        match serve(&f, args) {
            Ok(_) => panic!("{text:?} was accepted"),
            Err(e) => {
                let message = e.to_string();
                assert!(
                    message.starts_with(&f.path.display().to_string()),
                    "{message} names the file"
                );
                message
            }
        }
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it() {
        let message = error("max-mb = 1\nmax-mbb = 2\n", &[]);
        assert!(
            message.ends_with(":2: unknown setting `max-mbb` (did you mean `max-mb`?)"),
            "{message}"
        );
        let message = error("[serve]\nmax-mb = 1\n", &[]);
        assert!(
            message.contains("unknown setting `serve` (settings are keys"),
            "{message}"
        );
        let message = error("config = \"other.toml\"\n", &[]);
        assert!(
            message.contains("`--config` is no setting of a file"),
            "{message}"
        );
        let message = error("help = true\n", &[]);
        assert!(message.contains("unknown setting `help`"), "{message}");
    }

    #[test]
    fn a_wrong_type_is_an_error_naming_the_key() {
        for (text, expected) in [
            (
                "max-mb = \"64\"",
                ":1: `max-mb`: must be an integer, not a string",
            ),
            (
                "no-auth = \"true\"",
                ":1: `no-auth`: must be true or false, not a string",
            ),
            (
                "direct = 1",
                ":1: `direct`: must be true or false, not an integer",
            ),
            (
                "listen = 8080",
                ":1: `listen`: must be a string, not an integer",
            ),
            (
                "max-mb = [1]",
                ":1: `max-mb`: takes one value (an integer), not a list",
            ),
            (
                "ignore = [1]",
                ":1: `ignore`: in the list: must be a string, not an integer",
            ),
            (
                "verbose = true",
                ":1: `verbose`: must be an integer, not a boolean",
            ),
            (
                "\n\nstore = { a = 1 }",
                ":3: `store`: must be a string, not a table",
            ),
        ] {
            let message = error(text, &[]);
            assert!(message.ends_with(expected), "{text}: {message}");
        }
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_key() {
        let message = error("\nlisten = \"nowhere\"\n", &[]);
        assert!(
            message.contains(":2: `listen`: invalid value 'nowhere' for '--listen <listen>'"),
            "{message}"
        );
        let message = error("max-mb = -1\n", &[]);
        assert!(
            message.contains(":1: `max-mb`: invalid value '-1'"),
            "{message}"
        );
        let message = error("log_format = \"xml\"\n", &[]);
        assert!(
            message.contains(":1: `log_format`: invalid value 'xml'"),
            "{message}"
        );
        assert!(
            message.contains("[possible values: text, json]"),
            "{message}"
        );
        let message = error("verbose = 300\n", &[]);
        assert!(
            message.ends_with("`verbose`: 300 is not a count from 0 to 255"),
            "{message}"
        );
        let message = error("proxy = []\n", &[]);
        assert!(message.contains("`proxy`: is an empty list"), "{message}");
        // An empty list where the default is empty is no list.
        let f = file("ignore = []\n");
        assert!(many(&serve(&f, &[]).expect("parses"), "ignore").is_empty());
    }

    #[test]
    fn a_key_twice_is_an_error() {
        let message = error("max-mb = 1\nmax_mb = 2\n", &[]);
        assert!(
            message.contains(":2: `max_mb`: is `max-mb` again (line 1)"),
            "{message}"
        );
    }

    #[test]
    fn a_bad_value_outranked_by_a_flag_is_an_error_still() {
        let message = error("listen = \"nowhere\"\n", &["--listen", "127.0.0.1:1"]);
        assert!(
            message.contains(":1: `listen`: invalid value 'nowhere'"),
            "{message}"
        );
    }

    #[test]
    fn settings_that_conflict_are_an_error() {
        let message = error("geometric = true\nprune = true\n", &[]);
        assert!(
            message.contains("its settings do not go together"),
            "{message}"
        );
        assert!(message.contains("--geometric"), "{message}");
        // With the command line too.
        let message = error("prune = true\n", &["--geometric"]);
        assert!(
            message.contains("the command line or the environment do not go together"),
            "{message}"
        );
        assert!(message.contains("cannot be used with"), "{message}");
    }

    #[test]
    fn not_toml_is_an_error() {
        let message = error("max-mb = \n", &[]);
        assert!(message.contains("TOML parse error at line 1"), "{message}");
        let missing = PathBuf::from("/nonexistent/stowage.toml");
        let argv = ["app", "serve", "--config", "/nonexistent/stowage.toml"];
        match parse(cli(), argv) {
            Err(Error::Read { path, .. }) => assert_eq!(path, missing),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_checked_first() {
        match parse(cli(), ["app", "serve", "--max-mb", "x"]) {
            Err(Error::CommandLine(e)) => assert_eq!(e.kind(), ErrorKind::ValueValidation),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn describe_says_where_each_value_came_from() {
        let f = file("max-mb = 7\nignore = [\"a\", \"b\"]\n");
        let parsed = serve(&f, &["--no-auth"]).expect("parses");
        let text = parsed.describe_with("app serve", std::iter::empty());
        let expected = [
            "listen = \"127.0.0.1:8080\"  # default",
            "max-mb = 7  # file",
            "no-auth = true  # flag",
            "no-checks = true  # default",
            "direct = true  # default",
            "ignore = [\"a\", \"b\"]  # file",
            "proxy = [\"127.0.0.1/32\", \"::1/128\"]  # default",
            "verbose = 0  # default",
            "store = \"file://./data\"  # default",
            "# api-token is not set  # default",
            "log-format = \"text\"  # default",
        ];
        for line in expected {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
        assert!(text.contains(&format!("# Settings file: {} (flag)", f.path.display())));
        assert!(!text.contains("config ="), "{text}");
    }

    #[test]
    fn describe_masks_secrets() {
        let f = file("api-token = \"tok-123\"\nstore = \"s3://AKID:hunter2@bucket/p\"\n");
        let parsed = serve(&f, &[]).expect("parses");
        let environment = [
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUt"),
            ("AWS_REGION", "eu-west-1"),
            ("STOWAGE_S3_READ_TIMEOUT_SECS", "9"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let text = parsed.describe_with("app serve", environment.into_iter());
        for secret in ["tok-123", "hunter2", "AKID", "wJalrXUt"] {
            assert!(!text.contains(secret), "{secret} in\n{text}");
        }
        assert!(
            text.contains("api-token = \"********\"  # file; masked\n"),
            "{text}"
        );
        assert!(
            text.contains("store = \"s3://********@bucket/p\"  # file; masked\n"),
            "{text}"
        );
        assert!(
            text.contains("# AWS_SECRET_ACCESS_KEY=\"********\"\n"),
            "{text}"
        );
        assert!(text.contains("# AWS_REGION=\"eu-west-1\"\n"), "{text}");
        assert!(
            text.contains("# STOWAGE_S3_READ_TIMEOUT_SECS=\"9\"\n"),
            "{text}"
        );
        assert!(!text.contains("HOME"), "{text}");
    }

    #[test]
    fn errors_mask_secrets() {
        let message = error("max-mb = 1\nlisten = \"s3://AKID:hunter2@bucket\"\n", &[]);
        assert!(!message.contains("hunter2"), "{message}");
        assert!(message.contains("s3://********@bucket"), "{message}");
    }

    #[test]
    fn what_describe_prints_is_a_settings_file_that_gives_the_same() {
        let f = file("max-mb = 7\nignore = [\"a\"]\nno-checks = false\nverbose = 3\n");
        let parsed = serve(&f, &["--no-auth", "--log-format", "json"]).expect("parses");
        let first = parsed.describe_with("app serve", std::iter::empty());
        let again = file(&first);
        let reparsed = serve(&again, &[]).expect("what describe printed parses");
        let second = reparsed.describe_with("app serve", std::iter::empty());
        let values = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| l.split("  #").next().unwrap_or(l).to_owned())
                .collect()
        };
        assert_eq!(values(&first), values(&second));
        // Every value is the file's now, but the one the environment (PATH) outranks.
        let settings: Vec<&str> = second.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(settings.len() > 10, "{second}");
        for line in settings {
            assert!(
                line.ends_with("# file") || line.ends_with("# env PATH, over the file's"),
                "{line}"
            );
        }
    }

    #[test]
    fn secret_names() {
        for name in [
            "api-token",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "admin-password",
            "webhook-secret",
            "tls-private-key",
            "aws_access_key_id",
        ] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in [
            "store",
            "max-request-mb",
            "tls-key",
            "trust-proxy-user",
            "AWS_REGION",
        ] {
            assert!(!is_secret_name(name), "{name}");
        }
        assert_eq!(mask("store", "s3://bucket/x"), "s3://bucket/x");
        assert_eq!(
            mask("public-url", "https://u:p@git.example.com/x?y"),
            "https://********@git.example.com/x?y"
        );
        assert_eq!(
            mask("list", "http://a@b, https://c:d@e/"),
            "http://********@b, https://********@e/"
        );
    }

    #[test]
    fn the_table_lists_every_flag() {
        let mut command = cli();
        command.build();
        let serve = command.find_subcommand("serve").expect("serve");
        let table = table(serve);
        for long in setting_names(serve) {
            assert!(
                table.contains(&format!("| `--{long}`")),
                "{long} in\n{table}"
            );
        }
        assert!(table.contains("| `--config` |"), "{table}");
        assert!(
            table.contains("| `--proxy` (a list) |  | `127.0.0.1/32`, `::1/128` |"),
            "{table}"
        );
        assert!(
            table.contains("| `--search-path` | `PATH` | none |"),
            "{table}"
        );
        assert!(table.contains("| `--no-checks` |  | `true` |"), "{table}");
        assert!(!table.contains("`--help`"), "{table}");
    }

    #[test]
    fn edit_distance() {
        assert_eq!(distance("max-mb", "max-mbb"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }
}
