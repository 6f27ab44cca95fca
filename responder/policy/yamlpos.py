"""YAML with positions: the plain data plus where each value stood, so errors say file:line:col."""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple[str | int, ...]


class YamlError(ValueError):
    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{file}:{line}:{column}: {message}")
        self.file, self.line, self.column = file, line, column


def load_with_positions(text: str, file: str) -> tuple[Any, dict[Path_, tuple[int, int]]]:
    """Parse one YAML document safely; return the data and a map from key path to (line, column), 1-based."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlError(file, line, col, f"invalid YAML: {exc.problem}") from None
    positions: dict[Path_, tuple[int, int]] = {}
    constructor = yaml.SafeLoader("")
    if node is None:
        return None, positions

    def walk(n: yaml.Node, path: Path_) -> Any:
        positions.setdefault(path, (n.start_mark.line + 1, n.start_mark.column + 1))  # a key points at itself
        if isinstance(n, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in n.value:
                key = constructor.construct_object(key_node, deep=True)
                if key in out:
                    line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                    raise YamlError(file, line, col, f"duplicate key {key!r}")
                positions[(*path, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = walk(value_node, (*path, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(v, (*path, i)) for i, v in enumerate(n.value)]
        return constructor.construct_object(n, deep=True)

    return walk(node, ()), positions


def position(positions: dict[Path_, tuple[int, int]], path: Path_) -> tuple[int, int]:
    """The position of the longest prefix of `path` that has one (an error on a missing key points at
    its parent mapping)."""
    for end in range(len(path), -1, -1):
        found = positions.get(tuple(path[:end]))
        if found is not None:
            return found
    return (1, 1)
