"""What is wrong with a YAML file a user wrote, as `file:line: what. fix`: the line is the one to edit (PyYAML marks
where it noticed the defect, often the line after it), and tags that would construct anything but plain values
are named before anything is constructed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

_STD = "tag:yaml.org,2002:"
PLAIN_TAGS = frozenset(_STD + t for t in ("str", "int", "float", "bool", "null", "seq", "map"))
"""Explicit tags a config may carry: they only restate a plain value's type (`!!str 1.0`)."""

_CLOSER = {"[": "]", "{": "}"}
_BREAKS = "\r\n\x85\u2028\u2029"


def _text_of_line(text: str, mark: yaml.Mark) -> str:
    """The whole line `mark` is on, without its line break."""
    start = mark.index - mark.column
    end = min((i for i in (text.find(b, start) for b in _BREAKS) if i >= 0), default=len(text))
    return text[start:end]


def _shown(tag: str, handle: str | None) -> str:
    """The tag as a user writes it: !!int, !foo, !<tag:x> (verbatim), ! (non-specific)."""
    if handle == "!!" or tag.startswith(_STD):
        return "!!" + tag.removeprefix(_STD)
    return tag if handle or tag == "!" else f"!<{tag}>"


def tag_problems(text: str, where: Path | str) -> list[str]:
    """One line per explicit tag other than PLAIN_TAGS (`!!python/object/apply:...`, `!!binary`, `!custom`): the
    safe loader would refuse most, and none is a value a config or a data.yaml holds. `text` must scan."""
    out = []
    for tok in yaml.scan(text, Loader=yaml.SafeLoader):
        if not isinstance(tok, yaml.TagToken):
            continue
        handle, suffix = tok.value
        tag = _STD + suffix if handle == "!!" else (handle or "") + suffix
        if tag not in PLAIN_TAGS:
            out.append(f"{where}:{tok.start_mark.line + 1}: the YAML tag '{_shown(tag, handle)}' is not allowed: "
                       f"a config holds plain values (remove the tag)")
    return out


class Loader(yaml.SafeLoader):
    """The safe loader, remembering the node it constructed last: the one a construction error is about."""

    last: yaml.Node | None = None

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        self.last = node
        return super().construct_object(node, deep=deep)


def construct_problem(e: Exception, where: Path | str, node: yaml.Node | None) -> str:
    """A value the safe loader could not build: `!!int abc`, a date such as 2024-13-01, a merge `<<:` of a
    non-mapping, a list as a key."""
    unknown = isinstance(e, yaml.MarkedYAMLError) and "could not determine a constructor" in str(e.problem)
    if isinstance(node, yaml.ScalarNode) and (unknown or not isinstance(e, yaml.MarkedYAMLError)):
        return (f"{where}:{node.start_mark.line + 1}: {node.value!r} cannot be read as "
                f"{_shown(node.tag, None)}. Fix the value, or quote it to keep it as text")
    mark = getattr(e, "problem_mark", None) or (node.start_mark if node is not None else None)
    at = f"{where}:{mark.line + 1}" if mark else str(where)
    what = getattr(e, "problem", None) or f"{type(e).__name__}: {e}"
    return f"{at}: this value cannot be read ({what}). Write it as a plain value (text, a number, a list, a mapping)"


def _tokens_before(text: str, index: int) -> list[yaml.Token]:
    """The tokens that start before `index` (scanning stops at the first error)."""
    scanner = yaml.SafeLoader(text)
    out: list[yaml.Token] = []
    try:
        while scanner.check_token():
            tok = scanner.get_token()
            if tok.start_mark.index >= index:
                break
            out.append(tok)
    except yaml.YAMLError:
        out += [t for t in scanner.tokens if t.start_mark.index < index]
    finally:
        scanner.dispose()
    return sorted(out, key=lambda t: t.start_mark.index)


def _missing_colon(line: str) -> str:
    content = line.strip()
    key, colon, rest = content.partition(":")
    if colon and rest and not rest[0].isspace():
        return (f"'{content}' has no space after its ':'. Write '{key}: {rest}' (YAML separates a key from its "
                f"value with ': ')")
    if " " in content:
        key, _, rest = content.partition(" ")
        return f"'{content}' has no ':' after its key. Write '{key}: {rest}'"
    return f"'{content}' has no ':' after it. Write '{content}:'"


def _mapping_value(text: str, problem: yaml.Mark) -> tuple[yaml.Mark, str]:
    """'mapping values are not allowed here': a ':' inside a value. When the value began on an earlier line, either
    that line is a key without its ':' (the value is the line itself) or this line is indented deeper than its
    key and so reads as part of the value before it."""
    scalars = [t for t in _tokens_before(text, problem.index) if isinstance(t, yaml.ScalarToken)]
    start = scalars[-1].start_mark if scalars else problem
    if start.line == problem.line:
        return problem, ("a second ': ' inside a value. Quote the value (e.g. key: 'a: b'), or put the key on a line "
                         "of its own")
    if not _text_of_line(text, start)[: start.column].strip(" -"):
        return start, _missing_colon(_text_of_line(text, start))
    return problem, ("this line is indented deeper than the key it belongs with, so it reads as part of the value "
                     f"on line {start.line + 1}. Indent it like the other keys of its section")


def _flow(text: str, e: yaml.MarkedYAMLError) -> tuple[yaml.Mark, str] | None:
    """An unclosed '[' / '{', or a missing ',': the line of the last item before the parser gave up."""
    opened, problem = e.context_mark, e.problem_mark
    if opened is None or problem is None:
        return None
    bracket = text[opened.index] if opened.index < len(text) else "["
    closer = _CLOSER.get(bracket, "]")
    before = _tokens_before(text, problem.index)
    last = before[-1].start_mark if before else opened
    if last.line == opened.line:
        return last, f"the '{bracket}' opened on this line is not closed. Close it with '{closer}'"
    return last, (f"a ',' or the closing '{closer}' is missing at the end of this line (the '{bracket}' opened on "
                  f"line {opened.line + 1})")


def _last_content_line(text: str, mark: yaml.Mark) -> int:
    """mark's line; at the end of the stream, the last line that holds anything (the defect is in it, not after
    it)."""
    if text[mark.index:].strip():
        return mark.line
    lines = text[: mark.index].splitlines()
    return next((i for i in range(len(lines) - 1, -1, -1)
                 if lines[i].strip() and not lines[i].lstrip().startswith("#")), mark.line)


def syntax_problem(e: yaml.YAMLError, text: str, where: Path | str) -> str:
    """`file:line: not valid YAML: what. fix` for a scanner, parser or composer error, at the line to edit: a key
    without ':' (or with no space after it), a line indented unlike its section, an unclosed quote or bracket, a
    tab. Anything else: the PyYAML problem at the line it names."""
    problem = getattr(e, "problem", None) or str(e)
    pm, cm, ctx = getattr(e, "problem_mark", None), getattr(e, "context_mark", None), getattr(e, "context", None)
    found: tuple[yaml.Mark, str] | None = None
    if pm is not None and ("'\\t'" in problem or "tab character" in problem):
        found = pm, "a tab character; YAML indents with spaces only. Replace the tab with spaces"
    elif cm is not None and ctx == "while scanning a simple key":
        found = cm, _missing_colon(_text_of_line(text, cm))
    elif cm is not None and ctx == "while scanning a quoted scalar":
        quote = text[cm.index] if cm.index < len(text) else '"'
        found = cm, f"the quote {quote} opened on this line is not closed. End the value with {quote}"
    elif pm is not None and problem == "mapping values are not allowed here":
        found = _mapping_value(text, pm)
    elif ctx in ("while parsing a flow sequence", "while parsing a flow mapping"):
        found = _flow(text, e)
    elif pm is not None and ctx == "while parsing a block mapping" and "<block mapping start>" in problem:
        found = pm, ("this line is indented unlike the keys above it. Indent it with as many spaces as the other "
                     "keys of its section")
    if found is None:
        at = f"{where}:{_last_content_line(text, pm) + 1}" if pm is not None else str(where)
        return f"{at}: not valid YAML ({problem}). Fix the syntax."
    mark, what = found
    return f"{where}:{mark.line + 1}: not valid YAML: {what}."
