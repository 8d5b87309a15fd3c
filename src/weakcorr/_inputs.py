"""Bounded reading of untrusted text: config files, ``--set`` values and ``r(n)`` expressions.

Everything here is checked against a size bound *before* the expensive or recursive work, so
that no input reaches a recursion limit, a MemoryError or an exponential blow-up:

* config text: at most :data:`MAX_CONFIG_BYTES` (a file by its size on disk, before reading),
  UTF-8, and YAML collections nested at most :data:`MAX_YAML_NESTING` deep (checked while
  composing, long before PyYAML's recursive composer nears Python's recursion limit);
  aliases may not expand the document beyond :data:`MAX_ALIAS_EXPANSION` times its written
  nodes (a YAML "billion laughs" of 1 KB is refused in milliseconds), nor refer to
  themselves; explicit tags (``!!timestamp 0.1``, ``!!python/object``) are refused: configs
  hold plain values;
* ``r(n)`` expressions (``training.lr_factor``, paper Eq. 29 times ``r``): at most
  :data:`MAX_EXPRESSION_CHARS` characters, :data:`MAX_EXPRESSION_OPERATORS` operators and
  :data:`MAX_EXPRESSION_NESTING` nested parentheses, counted on the text before ``ast.parse``,
  which bounds the depth of the tree the evaluator walks;
* messages quote at most :data:`QUOTE_CHARS` characters of an offending value (:func:`clip`,
  :func:`describe`) on one line (control characters escaped).

Every refusal is a ``ValueError`` naming the source (file, ``--set`` item or field). No
weakcorr imports (layer 1).

>>> evaluate("2 * sqrt(n) - 1", 16)
7.0
>>> clip("x" * 100)[-5:]
'xx...'
"""

from __future__ import annotations

import ast
import math
import pathlib
import re
import reprlib
from collections.abc import Callable
from typing import Any

import yaml

__all__ = ["MAX_CONFIG_BYTES", "MAX_EXPRESSION_CHARS", "MAX_EXPRESSION_NESTING",
           "MAX_EXPRESSION_OPERATORS", "MAX_YAML_NESTING", "clip", "describe", "evaluate",
           "parse_expression", "read_config_text", "read_yaml"]

MAX_CONFIG_BYTES = 1_000_000  # a config file or one --set value (the presets are ~2 KB)
MAX_YAML_NESTING = 32  # collections inside one another (a config needs 3)
MAX_ALIAS_EXPANSION = 10  # nodes after alias expansion / nodes written (at least 1,000 allowed)
_MIN_EXPANDED = 1_000
MAX_EXPRESSION_CHARS = 1_000
MAX_EXPRESSION_OPERATORS = 100  # + - * / (each character of **) in an r(n) expression
MAX_EXPRESSION_NESTING = 20  # parentheses inside one another
QUOTE_CHARS = 80


# --------------------------------------------------------------------------- quoting


def clip(text: str, limit: int = QUOTE_CHARS) -> str:
    """At most ``limit`` characters of ``text`` (then ``...``), on one line: characters that
    are not printable (newlines, control characters, U+2028) are written as escapes."""
    head = text[: limit + 1]
    if not head.isprintable():
        head = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                       for c in head)
    return head if len(head) <= limit and len(text) <= limit else head[:limit] + "..."


class _Repr(reprlib.Repr):
    """``reprlib`` limits (a bounded walk of nested or shared structures) and no int repr of
    more than 4,300 digits (a ValueError in Python >= 3.11)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel, self.maxstring, self.maxother, self.maxlong = 3, 60, 60, 40
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = 4

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_REPR = _Repr()


def describe(value: Any) -> str:
    """``value`` for an error message: a repr of at most ~80 characters and its type.

    Bounded in time and size whatever ``value`` is (a list nested 10,000 deep, or 10⁹ leaves
    sharing nine levels of references).

    >>> describe([[1, 2], 3])
    '[[1, 2], 3] (list)'
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a user type whose __repr__ fails
        text = f"<{type(value).__name__} object>"
    return f"{clip(text)} ({type(value).__name__})"


# --------------------------------------------------------------------------- YAML


class ConfigLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that reads YAML 1.2 floats (``1e-3``, ``1E5``, ``1e+3``, ``.5``) and
    refuses explicit tags and nesting deeper than :data:`MAX_YAML_NESTING`.

    PyYAML follows YAML 1.1, where a float needs a dot and a signed exponent, so ``1e-3`` would
    be the string ``'1e-3'``. Its composer recurses once per level of nesting: the depth is
    checked on entry, so 10,000 nested ``[`` stop at level 33.
    """

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 - PyYAML's hook
        event = self.peek_event()
        if not isinstance(event, yaml.AliasEvent) and getattr(event, "tag", None) is not None:
            tag = str(event.tag).replace("tag:yaml.org,2002:", "!!", 1)
            raise _Refused(f"uses the tag `{clip(tag, 60)}` at line "
                           f"{event.start_mark.line + 1}; configs hold plain YAML values (numbers, "
                           "strings, true/false, lists, mappings): remove the tag")
        collection = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        self._depth += collection
        try:
            if self._depth > MAX_YAML_NESTING:
                raise _Refused(f"nests lists or mappings more than {MAX_YAML_NESTING} deep (line "
                               f"{event.start_mark.line + 1}); a config needs 3 levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= collection


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"
               r"|^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)$"),
    list("-+0123456789."),
)


class _Refused(yaml.YAMLError):
    """Valid YAML that a config may not hold (the message completes '<source> ...')."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for pair in node.value for x in pair]
    return []


def _check_aliases(root: yaml.Node) -> None:
    """Refuse aliases that refer to an enclosing node or expand the document beyond
    :data:`MAX_ALIAS_EXPANSION` times its written nodes.

    The composer returns an alias as the anchored node itself, so the document is a graph;
    its expanded size (every alias a copy) is summed bottom-up over distinct nodes, without
    ever building the expansion. Depth is bounded by the composer's check.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise _Refused(f"has an alias inside the node it refers to (line "
                           f"{node.start_mark.line + 1}): it would expand forever; write the "
                           "values out")
        active.add(key)
        total = 1 + sum(size(child) for child in _children(node))
        active.discard(key)
        sizes[key] = total
        return total

    expanded = size(root)
    allowed = max(_MIN_EXPANDED, MAX_ALIAS_EXPANSION * len(sizes))
    if expanded > allowed:
        shown = f"{expanded:,}" if expanded < 10**15 else f"about 10^{len(str(expanded)) - 1}"
        raise _Refused(f"has aliases (*name) that expand its {len(sizes):,} values to {shown}, "
                       f"more than {MAX_ALIAS_EXPANSION} times as many; write the values out "
                       "instead of nesting aliases")


def _duplicate_key(node: yaml.Node, path: str) -> tuple[str, int, int] | None:
    """The first key that a mapping of ``node`` repeats: (dotted path, first line, second line)."""
    todo, seen_nodes = [(node, path)], set()
    while todo:
        node, path = todo.pop()
        if id(node) in seen_nodes:  # an alias of a node already checked
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if key.tag == "tag:yaml.org,2002:merge":
                    continue
                name = key.value if isinstance(key, yaml.ScalarNode) else None
                where = f"{path}.{name}" if path else str(name)
                if name is not None:
                    if (key.tag, name) in lines:
                        return where, lines[key.tag, name], key.start_mark.line + 1
                    lines[key.tag, name] = key.start_mark.line + 1
                todo.append((value, where))
        elif isinstance(node, yaml.SequenceNode):
            todo.extend((v, f"{path}[{i}]") for i, v in enumerate(node.value))
    return None


def read_yaml(text: str, source: str) -> Any:
    """Parse config text with :class:`ConfigLoader`, bounded before parsing.

    Args:
        text: the YAML text (a file's contents or one ``--set`` value).
        source: how messages name it (``"config.yaml"``, ``"the value in --set 'a=b'"``).

    Returns:
        The constructed value (None for an empty document).

    Raises:
        ValueError: text over :data:`MAX_CONFIG_BYTES`, invalid YAML (control characters
            included), a tag, too deep a nesting, aliases that expand too far or refer to
            themselves, a repeated key, or a value PyYAML cannot construct (an integer of
            more than 4,300 digits); one line, naming ``source``.
    """
    source = clip(source, 120)
    if len(text) > MAX_CONFIG_BYTES:
        raise ValueError(f"{source} has {len(text):,} characters, more than the "
                         f"{MAX_CONFIG_BYTES:,} a config may have; shorten it")
    loader: ConfigLoader | None = None
    try:
        loader = ConfigLoader(text)  # the reader checks the characters here
        node = loader.get_single_node()
        if node is None:
            return None
        _check_aliases(node)
        duplicate = _duplicate_key(node, "")
        if duplicate is not None:
            key, first, second = duplicate
            raise ValueError(f"{source} has the key `{clip(key)}` twice (lines {first} and "
                             f"{second}); only the last would count, so keep one")
        return loader.construct_document(node)
    except _Refused as err:
        raise ValueError(f"{source} {err}") from None
    except yaml.YAMLError as err:
        message = f"{source} is not valid YAML: {err}".replace("\n", " ")
        raise ValueError(clip(message, 400)) from None
    except ValueError as err:
        if str(err).startswith(source):
            raise
        raise ValueError(f"{source} holds a value that cannot be read: {clip(str(err))}") from None
    except (ArithmeticError, TypeError, AttributeError, RecursionError) as err:
        raise ValueError(f"{source} holds a value that cannot be read: "
                         f"{type(err).__name__}: {clip(str(err))}") from None
    finally:
        if loader is not None:
            loader.dispose()


def read_config_text(path: pathlib.Path) -> str:
    """The text of a config file, its size checked on disk before reading.

    Raises:
        ValueError: a file over :data:`MAX_CONFIG_BYTES` or not UTF-8, naming it.
        OSError: the file cannot be read (permissions).
    """
    name = clip(str(path), 120)
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise ValueError(f"config file {name} has {size:,} bytes, more than the "
                         f"{MAX_CONFIG_BYTES:,} a config may have; is it the right file?")
    with open(path, "rb") as fh:
        raw = fh.read(MAX_CONFIG_BYTES + 1)  # the file may have grown since stat
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"config file {name} has more than {MAX_CONFIG_BYTES:,} bytes; is it "
                         "the right file?")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ValueError(f"config file {name} is not UTF-8 text (byte 0x{raw[err.start]:02x} "
                         f"on line {line}); save it as UTF-8") from None


# --------------------------------------------------------------------------- r(n) expressions


def _pow(a: float, b: float) -> float:
    out = a**b
    if isinstance(out, complex):  # a negative base to a non-integer power
        raise ValueError(f"({a:g}) ** {b:g} is not a real number")
    return out


FUNCS: dict[str, Callable[[float], float]] = {"sqrt": math.sqrt, "log": math.log, "exp": math.exp}
_BINOPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.Pow: _pow,
}


def _check_text(expr: str) -> None:
    """Bounds on the text that bound the parse tree: length, operators, nesting."""
    if len(expr) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression {clip(repr(expr))} has {len(expr):,} characters, more "
                         f"than {MAX_EXPRESSION_CHARS:,}")
    operators = sum(expr.count(c) for c in "+-*/")
    if operators > MAX_EXPRESSION_OPERATORS:
        raise ValueError(f"expression {clip(repr(expr))} has {operators:,} operators, more than "
                         f"{MAX_EXPRESSION_OPERATORS}")
    depth = deepest = 0
    for c in expr:
        if c == "(":
            depth += 1
            deepest = max(deepest, depth)
        elif c == ")":
            depth -= 1
    if deepest > MAX_EXPRESSION_NESTING:
        raise ValueError(f"expression {clip(repr(expr))} nests parentheses {deepest} deep, more "
                         f"than {MAX_EXPRESSION_NESTING}")


def parse_expression(expr: str) -> ast.expr:
    """Parse ``expr`` and check it uses only numbers, ``n``, + - * / **, sqrt, log, exp.

    The text is bounded first (:func:`_check_text`), so ``ast.parse`` and the evaluator never
    see a tree deeper than about :data:`MAX_EXPRESSION_OPERATORS` + 2 ×
    :data:`MAX_EXPRESSION_NESTING` levels.

    Raises:
        ValueError: anything else, too long or too deep an expression (quoting at most ~80
            characters of it).
    """
    _check_text(expr)
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError as err:
        raise ValueError(f"cannot parse expression {clip(repr(expr))}: {clip(str(err.msg))}"
                         ) from None
    except (ValueError, MemoryError, RecursionError) as err:  # null bytes; bounded otherwise
        raise ValueError(f"cannot parse expression {clip(repr(expr))}: {clip(str(err))}"
                         ) from None
    callees = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        ok = isinstance(node, (ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call,
                               ast.operator, ast.unaryop, ast.Load))
        if isinstance(node, ast.BinOp):
            ok = type(node.op) in _BINOPS
        elif isinstance(node, ast.UnaryOp):
            ok = isinstance(node.op, (ast.UAdd, ast.USub))
        elif isinstance(node, ast.Constant):
            ok = type(node.value) in (int, float)
        elif isinstance(node, ast.Name):
            ok = node.id == "n" or (id(node) in callees and node.id in FUNCS)
        elif isinstance(node, ast.Call):
            ok = (isinstance(node.func, ast.Name) and node.func.id in FUNCS
                  and len(node.args) == 1 and not node.keywords)
        elif isinstance(node, (ast.operator, ast.unaryop)):
            ok = type(node) in _BINOPS or isinstance(node, (ast.UAdd, ast.USub))
        if not ok:
            raise ValueError(
                f"expression {clip(repr(expr))} may use only numbers, `n`, + - * / ** and "
                f"{', '.join(sorted(FUNCS))}; found `{clip(ast.unparse(node), 40)}`"
            )
    return tree


def _eval_tree(tree: ast.expr, n: float) -> float:
    """Evaluate a checked tree at ``n`` with an explicit stack (no recursion)."""
    values: list[float] = []
    todo: list[tuple[ast.expr, bool]] = [(tree, False)]
    while todo:
        node, ready = todo.pop()
        if isinstance(node, ast.Constant):
            values.append(float(node.value))
        elif isinstance(node, ast.Name):
            values.append(float(n))
        elif not ready:
            todo.append((node, True))
            if isinstance(node, ast.BinOp):
                todo += [(node.right, False), (node.left, False)]
            elif isinstance(node, ast.UnaryOp):
                todo.append((node.operand, False))
            else:
                assert isinstance(node, ast.Call)  # checked by parse_expression
                todo.append((node.args[0], False))
        elif isinstance(node, ast.BinOp):
            right, left = values.pop(), values.pop()
            values.append(_BINOPS[type(node.op)](left, right))
        elif isinstance(node, ast.UnaryOp):
            values.append(-values.pop() if isinstance(node.op, ast.USub) else values.pop())
        else:
            assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            values.append(FUNCS[node.func.id](values.pop()))
    (value,) = values
    return float(value)


def evaluate(expr: str, n: float, tree: ast.expr | None = None) -> float:
    """Evaluate an arithmetic expression of ``n`` without ``eval`` (see :func:`parse_expression`).

    Raises:
        ValueError: an expression :func:`parse_expression` refuses, or one that cannot be
            evaluated at ``n`` (a log of 0, an overflow, a complex power).
    """
    tree = parse_expression(expr) if tree is None else tree
    try:
        return _eval_tree(tree, n)
    except (ArithmeticError, ValueError) as err:
        raise ValueError(f"expression {clip(repr(expr))} cannot be evaluated at n = {n}: "
                         f"{clip(str(err))}") from None
