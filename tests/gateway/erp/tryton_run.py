"""Run bits of Python against a Tryton database, each in one committed transaction.

Runs inside the Tryton virtualenv, started once by the tests' fixture (loading Tryton's pool
takes a second or two; a request then takes milliseconds). Each line on stdin is a request
``{"code": ..., "params": {...}}``: the code runs as the admin user with the admin's
preferences as context (company included, warnings skipped), with ``pool``, ``params``,
``Decimal`` and ``dt`` in scope, and the answer is one line on stdout: ``{"result": ...}``
(what the code left in ``result``) or ``{"error": "<traceback>"}`` (rolled back).

    python tryton_run.py TRYTOND_CONF DBNAME
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import traceback
from decimal import Decimal
from typing import Any


def main(conf_file: str, dbname: str) -> None:
    answers, sys.stdout = sys.stdout, sys.stderr  # what the code prints is not an answer
    from trytond import config

    config.update_etc(conf_file)
    from trytond.pool import Pool
    from trytond.transaction import Transaction

    Pool(dbname).init()
    with Transaction().start(dbname, 0, readonly=True):
        (admin,) = Pool().get("res.user").search([("login", "=", "admin")])
        admin_id = admin.id

    def execute(request: dict[str, Any]) -> Any:
        with Transaction().start(dbname, admin_id) as transaction:
            pool = Pool()
            context = pool.get("res.user").get_preferences(context_only=True)
            scope = {"pool": pool, "params": request.get("params", {}), "Decimal": Decimal,
                     "dt": dt, "result": None}  # fmt: skip
            with transaction.set_context(context, _skip_warnings=True):
                exec(request["code"], scope)
            transaction.commit()
        return scope["result"]

    for line in sys.stdin:
        try:
            answer = {"result": execute(json.loads(line))}
        except Exception:
            answer = {"error": traceback.format_exc()}
        answers.write(json.dumps(answer, default=str) + "\n")
        answers.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
