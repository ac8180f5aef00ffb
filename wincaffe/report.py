"""Tables of results: printed as aligned text, written as CSV and JSON (atomically).

Rows are plain dicts; a column list says which keys, in what order, under which
heading and with what format. Shared by ``wincaffe prune``, ``mults`` and
``compare``.
"""
import csv
import io
import json

from wincaffe.fileio import save_text


class Column:
    """``Column("density", "density", "{:.1%}")``: key, heading, format of a value."""

    def __init__(self, key, heading=None, fmt="{}"):
        self.key, self.heading, self.fmt = key, heading or key, fmt

    def show(self, row):
        value = row.get(self.key, "")
        if value is None or value == "":
            return ""
        try:
            return self.fmt.format(value)
        except (ValueError, TypeError):
            return str(value)


def format_table(rows, columns):
    """Aligned text: a heading line, then one line per row (numbers right-aligned)."""
    cells = [[c.heading for c in columns]] + [[c.show(r) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    numeric = [all(_is_number(r.get(c.key)) for r in rows) for c in columns]
    out = []
    for line in cells:
        out.append("  ".join(cell.rjust(w) if num else cell.ljust(w)
                             for cell, w, num in zip(line, widths, numeric)).rstrip())
    return "\n".join(out)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def to_csv(rows, keys):
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: r.get(k, "") for k in keys})
    return buf.getvalue()


def write_csv(path, rows, keys):
    save_text(path, to_csv(rows, keys))


def write_json(path, obj):
    save_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
