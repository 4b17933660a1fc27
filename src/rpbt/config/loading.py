"""Reading a run configuration: YAML files, dotted overrides, and errors that name the bad key.

:func:`load_config` reads a YAML file (:data:`DEFAULT_CONFIG_PATH` when none is given, a shipped config when the
path does not exist but names one: :func:`shipped_configs`), applies dotted command-line
overrides (``agent.learning_rate=1e-3``, as Hydra / OmegaConf users expect) and validates the result once, with the
models of :mod:`rpbt.config.schema`. A YAML mapping that names a key twice is an error (:class:`ConfigLoader`), not
a silent "last one wins", and so is an override whose value YAML would read only in part (a `` #`` comment).

Errors: :class:`~rpbt.config.schema.ConfigError` whose message names the dotted key, what was expected, and where
the bad value came from: the file, or the override (``agent.learning_rate=abc (command line)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Union

import yaml
from pydantic import ValidationError

from rpbt.config.schema import HPARAMS_BY_NAME, Config, ConfigError, SearchDim, default_search_space

#: The configs shipped inside the package (``rpbt configs`` lists them; ``rpbt train NAME`` runs one).
SHIPPED_CONFIG_DIR = Path(__file__).parent.parent / "configs"
DEFAULT_CONFIG_PATH = SHIPPED_CONFIG_DIR / "default.yaml"


def shipped_configs() -> dict[str, Path]:
    """The configs shipped inside the package, by name: the file's path under ``rpbt/configs/`` without ``.yaml``
    (``"default"``, ``"popgym/RepeatFirstEasy"``, ``"trading_googl"``), sorted by name."""
    found = SHIPPED_CONFIG_DIR.rglob("*.yaml")
    return dict(sorted((p.relative_to(SHIPPED_CONFIG_DIR).with_suffix("").as_posix(), p) for p in found))


def config_path(path: Union[str, Path]) -> Path:
    """The file a CONFIG argument names: an existing path as given (it always wins), else the shipped config of that
    name (``popgym/RepeatFirstEasy``, with or without ``.yaml``; :func:`shipped_configs`).

    Raises :class:`ConfigError` when it is neither, listing the shipped names.
    """
    given = Path(path)
    if given.exists():
        return given
    name = str(path).replace("\\", "/")
    for suffix in (".yaml", ".yml"):
        name = name.removesuffix(suffix)
    shipped = shipped_configs()
    if name in shipped:
        return shipped[name]
    raise ConfigError(f"config file not found: {path} (nor is it the name of a shipped config: "
                      f"{', '.join(shipped)}; `rpbt configs` lists them)")



class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping names a key twice (``yaml.safe_load`` would keep the last value silently)."""

    def __init__(self, key: Any, first: yaml.Mark, again: yaml.Mark):
        super().__init__(None, None, f"duplicate key {key!r} (first at line {first.line + 1}; YAML would keep only "
                                     f"the last one)", again)
        self.key, self.first, self.again = key, first, again


class ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader, except that a key given twice in one mapping raises :class:`DuplicateKeyError`
    (a ``yaml.YAMLError``) instead of silently keeping the last value. Keys a merge (``<<: *base``) brings in may
    be set again, as YAML intends."""

    def construct_document(self, node: yaml.Node) -> Any:
        # Checked on the document as written, before construction: constructing a merge (<<) rewrites the merged
        # mapping's own key list, which would read as duplicates there.
        stack, visited = [node], set()
        while stack:
            n = stack.pop()
            if id(n) in visited:
                continue
            visited.add(id(n))
            if isinstance(n, yaml.MappingNode):
                seen: dict[Any, yaml.Mark] = {}
                for key_node, value_node in n.value:
                    stack.append(value_node)
                    if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                        continue
                    key = self.construct_object(key_node)
                    try:
                        first = seen.setdefault(key, key_node.start_mark)
                    except TypeError:  # an unhashable key: SafeLoader's own error
                        continue
                    if first is not key_node.start_mark:
                        raise DuplicateKeyError(key, first, key_node.start_mark)
            elif isinstance(n, yaml.SequenceNode):
                stack.extend(n.value)
        return super().construct_document(node)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` with :class:`ConfigLoader`: a duplicate key raises :class:`DuplicateKeyError`."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - ConfigLoader is a SafeLoader


def _dropped_comment(text: str) -> Optional[str]:
    """The part of ``text`` YAML would read as a comment and drop (`` #...``, or all of it when it starts with
    ``#``), else None. ``a#1`` and quoted text (``'a #1'``) hold no comment."""
    end = 0
    for token in yaml.scan(text, Loader=ConfigLoader):  # the scanner skips comments: they lie between tokens
        start = token.start_mark.index
        if start > end and "#" in text[end:start]:
            return text[end + text[end:start].index("#"):start].rstrip()
        end = max(end, token.end_mark.index)
    return None


def _parse_value(text: str, where: str = "override", key: str = "key") -> Any:
    """Parse an override's right-hand side as YAML (so ``1e-3`` is a float, ``[1, 2]`` a list, ``null`` None).

    Text that is not YAML is kept as a string. Raises :class:`ConfigError` starting with ``where`` when YAML would
    silently lose part of it: a comment (``runs/a #1`` would read as ``runs/a``; quoted, ``'runs/a #1'`` is kept
    whole) or a key given twice in one mapping. ``key`` is the override's key, for the message.
    """
    try:
        comment = _dropped_comment(text)
        value = load_yaml(text)
    except DuplicateKeyError as err:
        raise ConfigError(f"{where}: key {err.key!r} is given twice in one mapping (YAML would keep only the last "
                          f"one)") from None
    except yaml.YAMLError:
        return text
    if comment is not None:
        quoted = '"' + key.strip() + "='" + text.strip().replace("'", "''") + "'\"" + " on a shell command line"
        raise ConfigError(f"{where}: YAML reads {comment!r} as a comment and would drop it from the value; quote the "
                          f"value to keep it (e.g. {quoted}), or leave the comment out")
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            return value
    return value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], origin: str = "command line",
                    setter: Optional["DottedSetter"] = None) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides to nested config data (in place, also returned).

    Values are parsed as YAML (:func:`_parse_value`) and set in order by one :class:`DottedSetter` (``setter``, to
    share it with further keys set after these; a new one by default). Raises :class:`ConfigError` naming the
    override for one without ``=``, with an empty key segment, one that descends into a non-mapping, and one whose
    value YAML would read only in part (a `` #`` comment: quote the value; a key given twice in one mapping). The
    message says the override came from ``origin`` (``argument`` for the Python API).
    """
    setter = setter if setter is not None else DottedSetter(data)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} ({origin}): expected key.sub=value")
        key, _, raw = item.partition("=")
        where = f"override {item!r} ({origin})"
        setter.set(key, _parse_value(raw, where, key), where)
    return data


#: Mappings of raw config data whose absence means a non-empty default: a dotted key into one that the data leaves
#: out starts from that default (``pbt.search_space.NAME=...`` changes or adds one dimension of the default space).
_ABSENT_MEANS: dict[tuple[str, ...], Callable[[], dict[str, Any]]] = {
    ("pbt", "search_space"): lambda: {name: dim.model_dump() for name, dim in default_search_space().items()},
}

_SPACE = ("pbt", "search_space")


def _search_key_parts(parts: list[str]) -> list[str]:
    """The path of a dotted key split on every dot, with a search dimension's name whole: after
    ``pbt.search_space.``, the last component is a field of the dimension when it is one of :class:`SearchDim`'s
    fields, else part of the name (``adversarial.epsilon``, ``agent.learning_rate``); a component that is no field
    after a known hyperparameter's name is a misspelled field of it (so that the error says "unknown key")."""
    if tuple(parts[:2]) != _SPACE or len(parts) <= 3:
        return parts
    rest = parts[2:]
    whole, head = ".".join(rest), ".".join(rest[:-1])
    known = {h.removeprefix("agent.") for h in HPARAMS_BY_NAME}
    if rest[-1] in SearchDim.model_fields or (whole.removeprefix("agent.") not in known
                                              and head.removeprefix("agent.") in known):
        return [*_SPACE, head, rest[-1]]
    return [*_SPACE, whole]


class DottedSetter:
    """Sets dotted keys of one config's nested data (in place), one after another: the overrides of one command.

    A key inside a mapping the data leaves out creates it: empty, or its default when that is not empty
    (:data:`_ABSENT_MEANS`: ``pbt.search_space.NAME`` changes or adds one dimension of the default search space,
    as it does of a space the data gives). A search dimension is named as in the file, dots and all
    (``pbt.search_space.adversarial.epsilon.high``: :func:`_search_key_parts`); ``agent.NAME`` and ``NAME`` reach
    the same dimension, under the name the space holds it by.

    An override that changes a dimension's ``type`` (``pbt.search_space.NAME.type=categorical`` on a float) starts
    that dimension afresh: it keeps none of the fields the data gave it (a float's low / high / scale, a
    categorical's values), only those the overrides of this setter give, before or after the type.
    """

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self._given: dict[str, set[str]] = {}  # dimension -> fields this setter set on it
        self._whole: set[str] = set()  # dimensions this setter set whole: every field is an override's
        self._space_whole = False  # the whole search space (or pbt) was set by this setter

    def set(self, key: str, value: Any, where: str) -> None:
        """Set the dotted ``key`` to ``value``. Raises :class:`ConfigError` starting with ``where`` for an empty
        key segment or a key that descends into a non-mapping."""
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"{where}: empty key segment; expected key.sub=value")
        parts = _search_key_parts(parts)
        node = self.data
        for depth, part in enumerate(parts):
            if tuple(parts[:depth]) == _SPACE:
                part = parts[depth] = _dimension_key(node, part)
            if depth == len(parts) - 1:
                break
            child = node.get(part)
            if child is None:
                default = _ABSENT_MEANS.get(tuple(parts[: depth + 1])) if part not in node else None
                child = node[part] = default() if default is not None else {}
            if not isinstance(child, dict):
                raise ConfigError(f"{where}: {'.'.join(parts[: depth + 1])} is not a section; expected a key inside "
                                  f"one")
            node = child
        if len(parts) == 4 and tuple(parts[:2]) == _SPACE:
            name, field = parts[2], parts[3]
            if field == "type" and value != node.get("type", "float") and not self._space_whole \
                    and name not in self._whole:
                given = self._given.get(name, set())
                for old in [f for f in node if f not in given]:
                    del node[old]
            self._given.setdefault(name, set()).add(field)
        elif len(parts) == 3 and tuple(parts[:2]) == _SPACE:
            self._whole.add(parts[2])
        elif len(parts) <= 2 and _SPACE[: len(parts)] == tuple(parts):
            self._space_whole = True
        node[parts[-1]] = value


def _dimension_key(space: dict[str, Any], name: str) -> str:
    """The key of ``space`` (a search space's raw data) that the dimension ``name`` of a dotted key reaches: itself,
    else the key that differs from it only by the ``agent.`` prefix, else ``name`` (a new dimension)."""
    if name in space:
        return name
    bare = name.removeprefix("agent.")
    return next((k for k in space if isinstance(k, str) and k.removeprefix("agent.") == bare), name)


def set_dotted(data: dict[str, Any], key: str, value: Any, where: str) -> None:
    """Set the dotted ``key`` (``agent.network.lstm_hidden_size``) of nested config data to ``value`` (in place):
    one :meth:`DottedSetter.set` (see there for search dimensions). Raises :class:`ConfigError` starting with
    ``where`` for an empty key segment or a key that descends into a non-mapping."""
    DottedSetter(data).set(key, value, where)


def dotted_items(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"section.key": value}`` (the inverse of :func:`set_dotted`; a leaf is anything that
    is not a dict, lists included)."""
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(dotted_items(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


def _unaliased(key: str) -> str:
    """A dotted key with a search dimension's ``agent.`` prefix left out (``pbt.search_space.agent.gamma.low`` ->
    ``pbt.search_space.gamma.low``): both reach one dimension."""
    prefix = "pbt.search_space.agent."
    return "pbt.search_space." + key[len(prefix):] if key.startswith(prefix) else key


def _override_origin(loc: str, message: str, overrides: Sequence[str]) -> list[str]:
    """The overrides that set the key of an error at ``loc`` (the last one per key; ``[]``: the file did).

    An override matches when its key and ``loc`` are equal or one contains the other (``pbt.search_space.lr`` for an
    error at ``pbt.search_space``, ``agent`` for one at ``agent.learning_rate``; a search dimension's ``agent.``
    prefix left out). An error of the whole config
    (empty ``loc``: a cross-field check) matches the overrides whose key its message names.
    """
    last: dict[str, str] = {}
    for item in overrides:
        last[_unaliased(item.partition("=")[0].strip())] = item
    loc = _unaliased(loc)
    found = []
    for key, item in last.items():
        if loc:
            hit = key == loc or key.startswith(loc + ".") or loc.startswith(key + ".")
        else:
            hit = key in message
        if hit:
            found.append(item)
    return found


def format_errors(err: ValidationError, source: str, overrides: Sequence[str] = (),
                  origin: str = "command line") -> str:
    """The message of a :class:`ConfigError` for pydantic's ``err``: a header naming ``source`` (the file) when the
    file set a bad value, then one line per error: the dotted key, or the override that set it (from
    ``overrides``, the ``key.sub=value`` items applied to the file's data, said to come from ``origin``), what was
    expected and what was given. For any model validated from config data with overrides (the ``spike_study``
    section too)."""
    file_lines, override_lines = [], []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; `rpbt config` prints every valid key)"
        elif ("input" in e and e["type"] != "missing" and not isinstance(e["input"], dict)
              and f"got {e['input']!r}" not in msg):  # a validator's own message may already say what it got
            msg = f"{msg} (got {e['input']!r})"
        found = _override_origin(loc, msg, overrides)
        if found:
            where = ", ".join(found) + f" ({origin})"
            key = found[0].partition("=")[0].strip()
            override_lines.append(f"  {where}: {msg}" if loc in ("", key) else f"  {where}: {loc}: {msg}")
        else:
            file_lines.append(f"  {loc or '<root>'}: {msg}")
    header = f"invalid configuration in {source}:" if file_lines else "invalid configuration:"
    return "\n".join([header, *file_lines, *override_lines])


def config_from_dict(data: dict[str, Any], source: str = "<dict>", overrides: Sequence[str] = (),
                     origin: str = "command line") -> Config:
    """Validate nested config data; raises :class:`ConfigError` naming every bad key.

    ``source`` names where ``data`` came from (a file); ``overrides`` are the ``key.sub=value`` items already
    applied to it, so that an error they caused names the override, said to come from ``origin``, instead of the
    file.
    """
    # An empty section (`agent:` with nothing under it) means "all defaults", as in the file it came from.
    data = {k: ({} if v is None and k in Config.model_fields else v) for k, v in data.items()}
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, overrides, origin)) from None


def load_config(path: Optional[Union[str, Path]] = None, overrides: Optional[Sequence[str]] = None) -> Config:
    """Load a YAML config (the shipped default when ``path`` is None) and apply dotted overrides.

    ``env.entry_point`` without an ``env.id`` from the file or the overrides sets ``env.id`` to the entry point, so
    messages and reports name the custom environment rather than the default one.

    Raises :class:`ConfigError` when the file is missing, is not a YAML mapping, or fails validation; the message
    names the dotted key and the file, or the override when the bad value came from the command line.
    """
    overrides = list(overrides or [])
    given = path is not None
    path, data = read_config_data(path)
    id_given = env_id_given(data if given else None, overrides)
    apply_overrides(data, overrides)
    name_custom_env(data, id_given)
    return config_from_dict(data, source=str(path), overrides=overrides)


def env_id_given(data: Any = None, overrides: Sequence[str] = (), keys: Iterable[str] = ()) -> bool:
    """Whether the user named the environment (``env.id``), which decides whether a custom one is named by its
    entry point (:func:`name_custom_env`).

    ``data``: raw config data as the user gave it, before overrides (a file's, a mapping's, a ``Config``'s
    ``to_dict()``), or None when it is not the user's (the shipped default file); ``overrides``: ``key.sub=value``
    items; ``keys``: dotted keys set with Python values (the API's keyword overrides).
    """
    in_data = isinstance(data, dict) and isinstance(data.get("env"), dict) and "id" in data["env"]
    return (in_data or any(o.partition("=")[0].strip() == "env.id" for o in overrides)
            or any(k == "env.id" for k in keys))


def name_custom_env(data: dict[str, Any], id_given: bool) -> None:
    """Set ``env.id`` of raw config data to ``env.entry_point`` when an entry point is given and no id was: a
    custom environment given only by its callable is named by it (in ``config.yaml``, messages and reports), not
    by the default environment's id."""
    env = data.get("env")
    if not id_given and isinstance(env, dict) and isinstance(env.get("entry_point"), str):
        env["id"] = env["entry_point"]


def _yaml_error_line(err: yaml.YAMLError) -> str:
    """A YAML parse error in one line: what is wrong and where (``line L, column C``), without PyYAML's multi-line
    excerpt of the file."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    context = getattr(err, "context", None)
    if problem is None:
        return " ".join(str(err).split())
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"{problem}{where}" + (f" ({context})" if context else "")


def _empty_words(text: str) -> str:
    """What an empty YAML file (one that reads as None) holds, in words: nothing (blank, or only document markers
    ``---`` / ``...``), only comments, or only null."""
    if not text.strip():
        return "the file is empty"
    bare = (yaml.StreamStartToken, yaml.StreamEndToken, yaml.DocumentStartToken, yaml.DocumentEndToken)
    if all(isinstance(token, bare) for token in yaml.scan(text, Loader=ConfigLoader)):
        # besides markers and white space, only comments are left: a '#' can be nowhere else
        return "the file is empty (it holds only comments)" if "#" in text else "the file is empty"
    return "the file is empty (it holds only null)"


def read_config_data(path: Optional[Union[str, Path]] = None) -> tuple[Path, dict[str, Any]]:
    """The raw mapping of a YAML config file (the shipped default when ``path`` is None; a path that does not exist
    names a shipped config, :func:`config_path`), not yet validated.

    Raises :class:`ConfigError` naming the file when it is missing (and no shipped config has that name), not YAML,
    empty (blank, only comments or only null: the default job is run by giving no file, so an empty one is a
    mistake, not a request for it), an empty mapping (``{}``: it sets no key, refused for the same reason), not a
    mapping, or names a key twice in one mapping (with the key and its lines).
    """
    path = config_path(path) if path is not None else DEFAULT_CONFIG_PATH
    if path.is_dir():
        raise ConfigError(f"{path}: a folder, not a config file (pass a YAML file; a run's is RUN_DIR/config.yaml)")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text()
        data = load_yaml(text)
    except DuplicateKeyError as err:
        raise ConfigError(f"{path}: key {err.key!r} is given twice in one mapping, at line {err.first.line + 1} and "
                          f"line {err.again.line + 1} (YAML would keep only the last one); merge them or remove "
                          f"one") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {_yaml_error_line(err)}") from None
    except UnicodeDecodeError as err:  # a binary file passed as the config
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8: {err.reason} at byte {err.start})") from None
    if data is None or data == {}:
        what = _empty_words(text) if data is None else "the file sets no key"
        raise ConfigError(f"{path}: {what}; give no file to run the default job, or write in it the keys to change "
                          f"(`rpbt config` prints every key)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections env, agent, pbt, run; got {type(data).__name__}")
    return path, data


