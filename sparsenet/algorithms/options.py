"""A method's options, read from its signature, and the check of the options a caller passes.

The options of a method are the keyword arguments of its `__init__`, followed down the classes
it passes `**options` to (SNIP -> PruningAtInit -> SparseMethod), with the default of the most
derived class. What each option means, and where its default comes from, is declared next to
the code in a small table per class, `option_help = {name: text}`, merged along the class
hierarchy (a subclass may say more about an option it inherits). A test checks that every
option of every registered method has its text and that no text names a missing option, so the
list that `sparsenet methods` prints cannot drift from the code.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect


@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    default: object
    help: str


def _init_parameters(cls):
    """[(name, default)] of the keyword arguments the class's constructor accepts."""
    seen, ordered = set(), []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        passes_on = False
        for p in list(inspect.signature(init).parameters.values())[1:]:      # skip self
            if p.kind is p.VAR_KEYWORD:
                passes_on = True
            elif p.kind is not p.VAR_POSITIONAL and p.name not in seen:
                seen.add(p.name)
                ordered.append((p.name, None if p.default is p.empty else p.default))
        if not passes_on:
            break
    return ordered


def option_help_table(cls) -> dict:
    """{option: text}, merged from the base classes up to `cls` (the most derived wins)."""
    table = {}
    for klass in reversed(cls.__mro__):
        table.update(klass.__dict__.get("option_help", {}))
    return table


def method_options(cls) -> list:
    """[Option] of a method class, in signature order."""
    texts = option_help_table(cls)
    return [Option(name, default, texts.get(name, "")) for name, default in _init_parameters(cls)]


def check_option_names(method_name: str, cls, given) -> None:
    """Raise ValueError for an option the method does not take, listing the valid ones."""
    valid = [o.name for o in method_options(cls)]
    unknown = [key for key in given if key not in valid]
    if not unknown:
        return
    key = unknown[0]
    aliases = getattr(cls, "option_aliases", {})        # another paper's name for an option
    close = difflib.get_close_matches(key, valid + list(aliases), n=1)
    if close and close[0] in aliases:
        hint = (f" (did you mean {aliases[close[0]]!r}? {method_name}'s name for what other "
                f"methods call {close[0]})")
    else:
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    takes = f"its options are {', '.join(valid)}" if valid else "it takes no options"
    raise ValueError(f"method {method_name!r} has no option {key!r}{hint}; {takes} "
                     f"(`sparsenet methods {method_name}` lists them with their defaults)")


def format_options_table(method_name: str, cls, width: int = 96) -> str:
    """The text `sparsenet methods NAME` prints: the summary, then each option as
    `name = default` and what it means, wrapped to `width` columns."""
    import textwrap
    doc = " ".join((inspect.getdoc(cls) or "").split("\n\n")[0].split())
    lines = [f"{method_name}: {doc}" if doc else method_name]
    options = method_options(cls)
    if not options:
        lines.append("  (no options)")
    for o in options:
        lines.append(f"  {o.name} = {o.default!r}")
        lines += textwrap.wrap(o.help, width, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)
