"""Runs SQL statements on a current ClickHouse engine in-process (the chdb-core wheel).

Reads a JSON array of statements on stdin, runs them in order in one fresh session, and
writes one JSON line per statement: {"ok": true, "result": "<TSV>"} or
{"ok": false, "error": "<message>"}. Used by the tests to prove that every migration and
query shape of the project runs on ClickHouse 26.x as well as on 18.16.
"""

import json
import sys
import tempfile

from chdb import session


def main() -> None:
    statements = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as path:
        s = session.Session(path)
        for sql in statements:
            try:
                result = s.query(sql, "TSV")
                print(json.dumps({"ok": True, "result": str(result)}), flush=True)
            except Exception as error:  # every failure is reported, none stops the run
                print(json.dumps({"ok": False, "error": str(error)}), flush=True)
        s.close()


if __name__ == "__main__":
    main()
