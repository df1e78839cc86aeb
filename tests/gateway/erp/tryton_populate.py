"""Fill a freshly initialised Tryton 8.2 database with the tests' deterministic sample data.

Runs inside the Tryton virtualenv (not the project's), in-process with proteus' trytond
backend, and with trytond's own ``Transaction`` where RPC refuses (out of storage moves,
a sale left ``confirmed``, a sale forced ``done``). Adapted from the shared recipe.

    python tryton_populate.py TRYTOND_CONF DBNAME

Prints a JSON summary (ids the tests use) as its last line. Every date is fixed, so a
database built on another day holds the same rows (only create/write dates differ):

* currency USD, company "Gateway Test Co" (the admin user's company)
* warehouses WH (made by the stock module) and WH2 "Second Warehouse"
* categories Shoes / Bags / Accessories; products SKU-001..SKU-050, list price
  ``10+i . i``, cost ``5+i`` (SKU-001: 11.01 and 6.00), category by ``i % 3``
* done moves: SKU-001..044 in WH (10·i, minus 3 for SKU-001..010), SKU-001..015 in WH2
  (i); SKU-045..047 went in and out again (0); SKU-048..050 never moved (0); one draft
  move (+100 SKU-001, planned) that counts for nothing
* parties CUST-001..CUST-020 with phone ``+1555000NNNN`` and email
  ``customerNNN@example.com`` (CUST-020 has none)
* eight sales of two lines each, left draft, quotation, confirmed, processing (2), done (2),
  cancelled; Tryton numbers them "1".."7" as they are quoted (the draft has no number)
* a validated REST key (``res.user.application``) for admin
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from decimal import Decimal

from proteus import Model
from proteus import config as pconfig
from trytond.pool import Pool
from trytond.transaction import Transaction

REST_KEY = "gateway-test-rest-key-0000000000000000"
PAST = dt.date(2025, 3, 1)
SOLD = dt.date(2025, 3, 10)
PLANNED = dt.date(2099, 1, 1)
CATEGORIES = ("Shoes", "Bags", "Accessories")
#: The state each of the eight sales is left in.
SALE_STATES = (
    "draft",
    "quotation",
    "confirmed",
    "processing",
    "processing",
    "done",
    "done",
    "cancelled",
)


def main(conf_file: str, dbname: str) -> dict[str, object]:
    cfg = pconfig.set_trytond(database=dbname, user="admin", config_file=conf_file)
    User = Model.get("res.user")
    Party = Model.get("party.party")
    Currency = Model.get("currency.currency")
    CurrencyRate = Model.get("currency.currency.rate")
    Company = Model.get("company.company")
    Location = Model.get("stock.location")
    Uom = Model.get("product.uom")
    Category = Model.get("product.category")
    Template = Model.get("product.template")
    Product = Model.get("product.product")
    Move = Model.get("stock.move")
    Sale = Model.get("sale.sale")
    UserApplication = Model.get("res.user.application")
    if Company.find([]):
        sys.exit("database already populated (a company exists)")

    usd = Currency(name="U.S. Dollar", code="USD", symbol="$", rounding=Decimal("0.01"))
    usd.save()
    CurrencyRate(date=dt.date(2000, 1, 1), rate=Decimal("1.0"), currency=usd).save()
    company = Company(party=Party(name="Gateway Test Co"), currency=usd)
    company.party.save()
    company.save()
    (admin,) = User.find([("login", "=", "admin")])
    admin.companies.append(Company(company.id))
    admin.company = company
    admin.save()
    cfg._context = User.get_preferences(True, {})

    (wh1,) = Location.find([("code", "=", "WH")])
    (supplier,) = Location.find([("code", "=", "SUP")])
    (customer,) = Location.find([("code", "=", "CUS")])
    sto1 = wh1.storage_location
    in2 = Location(name="Input 2", code="IN2", type="storage")
    out2 = Location(name="Output 2", code="OUT2", type="storage")
    sto2 = Location(name="Storage 2", code="STO2", type="storage")
    Location.save([in2, out2, sto2])
    wh2 = Location(
        name="Second Warehouse",
        code="WH2",
        type="warehouse",
        input_location=in2,
        output_location=out2,
        storage_location=sto2,
    )
    wh2.save()

    categories = [Category(name=name) for name in CATEGORIES]
    Category.save(categories)
    (unit,) = Uom.find([("name", "=", "Unit")])
    templates = []
    for i in range(1, 51):
        template = Template(
            name=f"Product {i:03d}",
            code=f"SKU-{i:03d}",  # product.product's code is derived from it
            type="goods",
            default_uom=unit,
            list_price=Decimal(f"{10 + i}.{i % 100:02d}"),
            salable=True,
        )
        template.categories.append(Category(categories[i % 3].id))
        templates.append(template)
    Template.save(templates)
    products = [t.products[0] for t in templates]
    for i, product in enumerate(products, 1):
        product.cost_price = Decimal(f"{5 + i}.00")
    Product.save(products)

    def move(product, src, dst, qty, planned=None):  # type: ignore[no-untyped-def]
        return Move(
            product=product,
            unit=unit,
            quantity=qty,
            from_location=src,
            to_location=dst,
            unit_price=Decimal("1"),
            currency=usd,
            effective_date=None if planned else PAST,
            planned_date=planned,
        )

    done = []
    for i, product in enumerate(products, 1):
        if i <= 44:
            done.append(move(product, supplier, sto1, 10 * i))
        if i <= 15:
            done.append(move(product, supplier, wh2.storage_location, i))
        if 45 <= i <= 47:
            done.append(move(product, supplier, sto1, 5))
    Move.save(done)
    Move.click(done, "do")  # supplier -> storage needs no assignment
    outs = [move(products[i], sto1, customer, 3) for i in range(10)]
    outs += [move(products[i], sto1, customer, 5) for i in range(44, 47)]
    Move.save(outs)
    Move.save([move(products[0], supplier, sto1, 100, planned=PLANNED)])

    parties = []
    for i in range(1, 21):
        party = Party(name=f"Customer {i:03d}", code=f"CUST-{i:03d}")
        address = party.addresses[0] if party.addresses else party.addresses.new()
        address.street = f"{i} Main Street"
        address.city = "Springfield"
        address.postal_code = f"{10000 + i}"
        if i != 20:
            party.contact_mechanisms.new(type="email", value=f"customer{i:03d}@example.com")
        party.contact_mechanisms.new(type="phone", value=f"+1555000{i:04d}")
        parties.append(party)
    Party.save(parties)

    sales = []
    for n, _state in enumerate(SALE_STATES):
        sale = Sale(
            party=parties[n],
            invoice_method="manual",  # no chart of accounts needed
            shipment_method="order",
            warehouse=wh2 if n % 2 else wh1,
            sale_date=SOLD + dt.timedelta(days=n),
        )
        for k in range(2):
            line = sale.lines.new()
            line.product = products[n * 2 + k]
            line.quantity = 1 + k
        sales.append(sale)
    Sale.save(sales)
    by_state = {state: [s for s, st in zip(sales, SALE_STATES, strict=True) if st == state]
                for state in set(SALE_STATES)}  # fmt: skip
    Sale.click([s for s in sales if s.state == "draft"][1:], "quote")  # all but the first
    Sale.click(by_state["processing"] + by_state["done"], "confirm")  # runs the process task
    Sale.click(by_state["cancelled"], "cancel")

    with Transaction().start(
        dbname, admin.id, context={**cfg._context, "_skip_warnings": True}
    ) as transaction:
        pool = Pool()
        TMove, TSale = pool.get("stock.move"), pool.get("sale.sale")
        moves = TMove.browse([m.id for m in outs])
        TMove.assign(moves)  # out of storage: assign, then do (refused over RPC)
        TMove.do(moves)
        TSale.confirm(TSale.browse([s.id for s in by_state["confirmed"]]))
        transaction.tasks.clear()  # no worker: its process task is never run, it stays confirmed
        TSale.do(TSale.browse([s.id for s in by_state["done"]]))
        transaction.commit()

    UserApplication(user=admin, application="rest", key=REST_KEY).save()
    Sale_ = Model.get("sale.sale")
    numbers = {s.number: s.state for s in Sale_.find([], order=[("id", "ASC")])}
    return {
        "rest_key": REST_KEY,
        "company": company.id,
        "currency": usd.id,
        "warehouses": {"WH": wh1.id, "WH2": wh2.id},
        "storage": {"WH": sto1.id, "WH2": wh2.storage_location.id},
        "supplier": supplier.id,
        "customer": customer.id,
        "unit": unit.id,
        "products": {p.code: p.id for p in products},
        "parties": {p.code: p.id for p in parties},
        "sales": numbers,
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
