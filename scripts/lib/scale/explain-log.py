#!/usr/bin/env python3
"""EXPLAIN (ANALYZE, BUFFERS) of the statements a service sent, read from PostgreSQL's log.

The database runs with log_min_duration_statement = 0, so the server logs every statement
with its parameters ("duration: ... execute <name>: SELECT ..." then "DETAIL: parameters:
$1 = '...'"). This reads the log from a byte offset, keeps the statements of one database
that read the given tables, and explains the first and the last that read the first table
(the first page and the deep page of a list-pages run) plus each other statement shape once
(e.g. the user lookup ListDevices makes first), with the logged parameter values substituted.

usage: explain-log.py LOG OFFSET DATABASE DB_URL TABLE[,TABLE...]
"""
import re
import subprocess
import sys

ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
EXECUTE = re.compile(r"duration: ([0-9.]+) ms\s+(?:execute|statement)[^:]*: (.*)", re.S)
PARAM = re.compile(r"\$(\d+) = ('(?:[^']|'')*'|NULL)")


def entries(path, offset):
    with open(path, "rb") as log:
        log.seek(offset)
        text = log.read().decode("utf-8", "replace")
    entry = []
    for line in text.splitlines():
        if ENTRY.match(line) and entry:
            yield "\n".join(entry)
            entry = []
        entry.append(line)
    if entry:
        yield "\n".join(entry)


def statements(path, offset, database, tables):
    """(duration ms, sql with parameters substituted) of each executed statement."""
    pending = None
    marker = f"@{database} "
    for entry in entries(path, offset):
        if marker not in entry.split("\n", 1)[0]:
            continue
        if "DETAIL:  parameters:" in entry and pending:
            values = dict(PARAM.findall(entry.split("DETAIL:  parameters:", 1)[1]))
            duration, sql = pending
            for number in sorted(values, key=int, reverse=True):
                sql = re.sub(r"\$" + number + r"(?!\d)", lambda _: values[number], sql)
            pending = None
            yield duration, sql
            continue
        if pending:
            yield pending
            pending = None
        match = EXECUTE.search(entry)
        if not match:
            continue
        sql = re.sub(r"\n\t", " ", match.group(2)).strip()
        if not any(re.search(rf'\b"?{table}"?\b', sql) for table in tables):
            continue
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        pending = (float(match.group(1)), sql)
    if pending:
        yield pending


def shape(sql):
    return re.sub(r"'(?:[^']|'')*'|\b\d+\b", "?", sql)


def main():
    path, offset, database, db_url, tables = sys.argv[1:6]
    tables = tables.split(",")
    found = list(statements(path, int(offset), database, tables))
    main_table = re.compile(rf'\b"?{tables[0]}"?\b')
    pages = [statement for statement in found if main_table.search(statement[1])]
    if not pages:
        print("  (no statement captured)")
        return
    chosen = [("first page", pages[0])]
    seen = {shape(pages[0][1]), shape(pages[-1][1])}
    for statement in found:
        if shape(statement[1]) not in seen:
            seen.add(shape(statement[1]))
            chosen.append(("other statement", statement))
    if len(pages) > 1:
        chosen.append(("deep page", pages[-1]))
    for what, (duration, sql) in chosen:
        print(f"-- {what} (logged {duration:.3f} ms): {sql}")
        result = subprocess.run(
            ["psql", db_url, "-X", "-At", "-c", f"EXPLAIN (ANALYZE, BUFFERS) {sql}"],
            capture_output=True, text=True, check=False)
        print(result.stdout.rstrip() or result.stderr.rstrip())
        print()


if __name__ == "__main__":
    main()
