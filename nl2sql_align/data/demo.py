"""The embedded demo: three small DuckDB databases and a few hundred question/SQL pairs, built offline.

It exists so that the whole pipeline (tokenizer, SFT, evaluation, RL) can run end to end on a CPU with a
randomly initialised 4-layer model. That shapes every choice below:

* The questions come from ~25 templates per database with 2-4 paraphrases each, and dev uses the same
  templates as train with different slot values (names, cities, numbers), so dev measures whether the model
  learnt the mapping and can copy values, not whether it memorised the answers. No dev question text is
  in train.
* Every value the SQL needs appears literally in the question, so the model can copy it.
* The SQL is written in one canonical style (upper-case keywords, single quotes, `T1`/`T2` aliases only for
  joins, no `ASC`), because a tiny model learns one consistent style far faster than several.
* Schemas are compact (prompt length is the main cost of CPU training).
* Slot values are drawn from the generated rows and every gold query is executed while building: a query
  whose result is empty, a lone NULL/0, or depends on how ties are broken under `ORDER BY ... LIMIT` is
  dropped, so execution accuracy is well defined.

Everything is deterministic: rows come from `random.Random` with fixed seeds over fixed lists, and the
databases are written with rows in a fixed order.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from functools import cache, lru_cache
from pathlib import Path
from random import Random

DEMO_VERSION = "5"  # bump whenever rows, templates or splitting change: it is part of the cache dir name
DB_IDS: tuple[str, ...] = ("shop", "school", "flights")
HARDNESS_LEVELS: tuple[str, ...] = ("easy", "medium", "hard", "extra")
# train to learn from, dev to tune on, test to report (never tuned on; see `_test_instances`)
SPLITS: tuple[str, ...] = ("train", "dev", "test")

_SEED = 20240611
_DEV_TARGET = 150  # dev examples: one per template, plus a second for a seeded draw of templates
# Many fillings per template, from wide value ranges: when a template is seen with only a handful of values a
# tiny model memorises them instead of learning to copy the value from the question, and dev (whose values
# are new for the template) then fails. Measured: 11 fillings/template gave 3% dev EX after 12 epochs.
_TRAIN_PER_TEMPLATE = 60  # train questions per template (fewer where the template has fewer fillings)
_MAX_FILLINGS = 80  # distinct slot fillings looked for per template (dev's plus enough for train)
_TEST_NEW_VALUES = 8  # test questions per seen template, from fillings train and dev never used
_TEST_PER_COMBINATION = 3  # test questions per test-only template
_TEST_VARIANTS_PER_COMBINATION = 2  # of those, how many also get a lower-cased "value_variant" copy
_VARIANT_SLOTS = ("city", "category", "country", "major", "department")  # string values a user may mistype

# --------------------------------------------------------------------------------------------------------
# Schemas. Primary and foreign keys are declared because the prompt's schema text shows them and joins are
# easier to get right when the model can see which columns match.
# --------------------------------------------------------------------------------------------------------

DEMO_SCHEMAS: dict[str, str] = {
    "shop": """\
CREATE TABLE customers (id INTEGER PRIMARY KEY, name VARCHAR, city VARCHAR, age INTEGER);
CREATE TABLE suppliers (id INTEGER PRIMARY KEY, name VARCHAR, country VARCHAR);
CREATE TABLE products (id INTEGER PRIMARY KEY, name VARCHAR, category VARCHAR, price DECIMAL(8,2),
    supplier_id INTEGER REFERENCES suppliers (id));
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers (id),
    product_id INTEGER REFERENCES products (id), quantity INTEGER, order_date DATE, status VARCHAR);
""",
    "school": """\
CREATE TABLE teachers (id INTEGER PRIMARY KEY, name VARCHAR, department VARCHAR, hire_year INTEGER);
CREATE TABLE courses (id INTEGER PRIMARY KEY, title VARCHAR, teacher_id INTEGER REFERENCES teachers (id),
    credits INTEGER);
CREATE TABLE students (id INTEGER PRIMARY KEY, name VARCHAR, major VARCHAR, age INTEGER, gpa DECIMAL(3,2));
CREATE TABLE enrollments (student_id INTEGER REFERENCES students (id), course_id INTEGER REFERENCES courses (id),
    grade INTEGER, PRIMARY KEY (student_id, course_id));
""",
    "flights": """\
CREATE TABLE airports (code VARCHAR PRIMARY KEY, city VARCHAR, country VARCHAR);
CREATE TABLE airlines (id INTEGER PRIMARY KEY, name VARCHAR, country VARCHAR);
CREATE TABLE flights (id INTEGER PRIMARY KEY, airline_id INTEGER REFERENCES airlines (id),
    origin VARCHAR REFERENCES airports (code), destination VARCHAR REFERENCES airports (code),
    distance INTEGER, price DECIMAL(8,2));
""",
}

# Tables in creation order (foreign keys need their targets first); rows are inserted in this order too.
_TABLE_ORDER: dict[str, tuple[str, ...]] = {
    "shop": ("customers", "suppliers", "products", "orders"),
    "school": ("teachers", "courses", "students", "enrollments"),
    "flights": ("airports", "airlines", "flights"),
}

# --------------------------------------------------------------------------------------------------------
# Fixed vocabularies. No apostrophes anywhere: values go into SQL string literals verbatim.
# --------------------------------------------------------------------------------------------------------

_FIRST_NAMES = (
    "Emma", "Liam", "Olivia", "Noah", "Ava", "Lucas", "Mia", "Leo", "Sofia", "Hugo", "Chloe", "Mateo",
    "Isla", "Elias", "Nora", "Oscar", "Lea", "Arthur", "Zoe", "Felix", "Clara", "Adam", "Alice", "Louis",
    "Ines", "Jonas", "Maya", "Theo", "Laura", "Daniel", "Sara", "Marco", "Julia", "Pablo", "Anna", "David",
    "Elena", "Samuel", "Lina", "Omar", "Hannah", "Victor", "Grace", "Ivan", "Amelia", "Martin", "Rosa",
    "Kenji", "Priya", "Tomas",
)  # fmt: skip
_LAST_NAMES = (
    "Martin", "Bernard", "Dubois", "Moreau", "Laurent", "Schmidt", "Fischer", "Weber", "Garcia", "Lopez",
    "Rossi", "Bianchi", "Smith", "Johnson", "Brown", "Taylor", "Wilson", "Clark", "Walker", "Young", "King",
    "Wright", "Hill", "Scott", "Green", "Baker", "Adams", "Nelson", "Carter", "Mitchell", "Novak",
    "Kowalski", "Jensen", "Larsen", "Silva", "Costa", "Tanaka", "Sato", "Kim", "Park", "Chen", "Singh",
    "Khan", "Murphy", "Kelly",
)  # fmt: skip

_SHOP_CITIES = (
    "Lyon", "Paris", "Berlin", "Madrid", "Rome", "London", "Boston", "Chicago", "Toronto", "Sydney",
    "Dublin", "Vienna",
)  # fmt: skip
_SUPPLIERS = (
    ("Acme Supplies", "United States"), ("Nordic Goods", "Sweden"), ("Sakura Trading", "Japan"),
    ("Rhine Industrial", "Germany"), ("Provence Crafts", "France"), ("Maple Distribution", "Canada"),
    ("Costa Verde Imports", "Spain"), ("Milano Design", "Italy"), ("Pacific Traders", "Australia"),
    ("Bavaria Home", "Germany"), ("Atlas Outdoor", "United States"), ("Fjord Living", "Sweden"),
)  # fmt: skip
# (category, low price, high price, product names)
_PRODUCTS = (
    ("Electronics", 15, 400, ("Wireless Mouse", "Mechanical Keyboard", "USB Hub", "Bluetooth Speaker",
                              "Noise Cancelling Headphones", "Webcam", "Smart Watch", "Portable Charger")),
    ("Kitchen", 10, 250, ("Chef Knife", "Cast Iron Pan", "Electric Kettle", "Coffee Grinder", "Cutting Board",
                          "Stand Mixer", "Toaster")),
    ("Sports", 10, 200, ("Yoga Mat", "Running Shoes", "Tennis Racket", "Water Bottle", "Dumbbell Set",
                         "Cycling Helmet", "Jump Rope")),
    ("Books", 8, 60, ("Mystery Novel", "Travel Guide", "Poetry Collection", "Science Atlas", "Cookbook",
                      "Graphic Novel")),
    ("Garden", 5, 150, ("Garden Hose", "Pruning Shears", "Flower Seeds", "Watering Can", "Lawn Sprinkler",
                        "Bird Feeder")),
    ("Toys", 8, 90, ("Puzzle Box", "Building Blocks", "Kite", "Board Game", "Toy Train", "Plush Bear")),
)  # fmt: skip
_ORDER_STATUSES = (("delivered", 6), ("shipped", 2), ("pending", 1), ("cancelled", 1))  # (status, weight)

# department -> course titles
_COURSES = (
    ("Mathematics", ("Linear Algebra", "Calculus", "Probability Theory", "Number Theory")),
    ("Physics", ("Classical Mechanics", "Quantum Physics", "Thermodynamics", "Astrophysics")),
    ("Chemistry", ("Organic Chemistry", "Biochemistry", "Physical Chemistry")),
    ("Biology", ("Genetics", "Cell Biology", "Ecology", "Microbiology")),
    ("History", ("Ancient History", "Modern Europe", "History of Science")),
    ("Literature", ("Modern Poetry", "The Novel", "Creative Writing", "Shakespeare Studies")),
    ("Computer Science", ("Data Structures", "Algorithms", "Databases", "Machine Learning", "Operating Systems")),
    ("Economics", ("Microeconomics", "Macroeconomics", "Econometrics", "Game Theory")),
)

# code, city, country, latitude, longitude (the coordinates only feed the distance column)
_AIRPORTS = (
    ("CDG", "Paris", "France", 49.01, 2.55), ("ORY", "Paris", "France", 48.72, 2.38),
    ("LHR", "London", "United Kingdom", 51.47, -0.45), ("LGW", "London", "United Kingdom", 51.15, -0.19),
    ("FRA", "Frankfurt", "Germany", 50.03, 8.57), ("MUC", "Munich", "Germany", 48.35, 11.79),
    ("MAD", "Madrid", "Spain", 40.47, -3.56), ("BCN", "Barcelona", "Spain", 41.30, 2.08),
    ("FCO", "Rome", "Italy", 41.80, 12.25), ("MXP", "Milan", "Italy", 45.63, 8.72),
    ("AMS", "Amsterdam", "Netherlands", 52.31, 4.76), ("IST", "Istanbul", "Turkey", 41.26, 28.74),
    ("JFK", "New York", "United States", 40.64, -73.78), ("LAX", "Los Angeles", "United States", 33.94, -118.41),
    ("ORD", "Chicago", "United States", 41.98, -87.90), ("YYZ", "Toronto", "Canada", 43.68, -79.63),
    ("NRT", "Tokyo", "Japan", 35.77, 140.39), ("DXB", "Dubai", "United Arab Emirates", 25.25, 55.36),
    ("SIN", "Singapore", "Singapore", 1.36, 103.99), ("SYD", "Sydney", "Australia", -33.94, 151.18),
)  # fmt: skip
_AIRLINES = (
    ("Air France", "France"), ("Lufthansa", "Germany"), ("British Airways", "United Kingdom"),
    ("Iberia", "Spain"), ("KLM", "Netherlands"), ("Delta Air Lines", "United States"),
    ("United Airlines", "United States"), ("Emirates", "United Arab Emirates"), ("Qantas", "Australia"),
    ("Turkish Airlines", "Turkey"), ("Japan Airlines", "Japan"), ("Air Canada", "Canada"),
    ("ITA Airways", "Italy"), ("Singapore Airlines", "Singapore"),
)  # fmt: skip

Row = tuple
Tables = dict[str, list[Row]]


# --------------------------------------------------------------------------------------------------------
# Row generation
# --------------------------------------------------------------------------------------------------------


def _people(rng: Random, n: int, taken: set[str]) -> list[str]:
    """`n` distinct "First Last" names not in `taken` (which is updated), in a seeded order."""
    pool = [f"{f} {last}" for f in _FIRST_NAMES for last in _LAST_NAMES]
    rng.shuffle(pool)
    out = [p for p in pool if p not in taken][:n]
    taken.update(out)
    return out


def _money(rng: Random, lo: float, hi: float, used: set[Decimal]) -> Decimal:
    # Distinct prices keep "most expensive"/"cheapest" questions free of ties.
    while True:
        value = Decimal(f"{rng.uniform(lo, hi):.2f}")
        if value not in used:
            used.add(value)
            return value


def _shop_rows(rng: Random) -> Tables:
    names = _people(rng, 70, set())
    customers = [(i + 1, name, rng.choice(_SHOP_CITIES), rng.randint(18, 75)) for i, name in enumerate(names)]
    suppliers = [(i + 1, name, country) for i, (name, country) in enumerate(_SUPPLIERS)]
    products: list[Row] = []
    used: set[Decimal] = set()
    for category, lo, hi, items in _PRODUCTS:
        for item in items:
            supplier = rng.randint(1, len(suppliers))
            products.append((len(products) + 1, item, category, _money(rng, lo, hi, used), supplier))
    # About a fifth of the customers never order, so "never placed an order" questions have answers.
    buyers = [c[0] for c in customers]
    rng.shuffle(buyers)
    buyers = sorted(buyers[: int(len(buyers) * 0.8)])
    statuses = [s for s, _ in _ORDER_STATUSES]
    weights = [w for _, w in _ORDER_STATUSES]
    start = date(2023, 1, 1)
    raw = []
    for _ in range(240):
        day = start + timedelta(days=rng.randrange(730))
        raw.append((day, rng.choice(buyers), rng.randint(1, len(products)), rng.randint(1, 4),
                    rng.choices(statuses, weights)[0]))  # fmt: skip
    raw.sort(key=lambda r: (r[0], r[1], r[2]))  # order ids follow the calendar, as in a real shop
    orders = [(i + 1, cust, prod, qty, day.isoformat(), status) for i, (day, cust, prod, qty, status) in enumerate(raw)]
    return {"customers": customers, "suppliers": suppliers, "products": products, "orders": orders}


def _school_rows(rng: Random) -> Tables:
    taken: set[str] = set()
    departments = [d for d, _ in _COURSES]
    teacher_names = _people(rng, 2 * len(departments), taken)
    teachers = [(i + 1, name, departments[i // 2], rng.randint(1990, 2022)) for i, name in enumerate(teacher_names)]
    courses: list[Row] = []
    for dept, titles in _COURSES:
        staff = [t[0] for t in teachers if t[2] == dept]
        for title in titles:
            courses.append((len(courses) + 1, title, rng.choice(staff), rng.choice((2, 3, 3, 4, 4, 5, 6))))
    student_names = _people(rng, 90, taken)
    students = [
        (i + 1, name, rng.choice(departments), rng.randint(18, 29), Decimal(f"{rng.uniform(2.0, 4.0):.2f}"))
        for i, name in enumerate(student_names)
    ]
    enrollments: list[Row] = []
    for sid, *_ in students:
        if rng.random() < 0.15:  # some students take nothing this term ("not enrolled" questions)
            continue
        for cid in sorted(rng.sample(range(1, len(courses) + 1), rng.randint(2, 5))):
            enrollments.append((sid, cid, rng.randint(45, 100)))
    return {"teachers": teachers, "courses": courses, "students": students, "enrollments": enrollments}


def _distance_km(a: tuple, b: tuple) -> int:
    lat1, lon1, lat2, lon2 = map(math.radians, (a[3], a[4], b[3], b[4]))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return round(2 * 6371 * math.asin(math.sqrt(h)))


def _flights_rows(rng: Random) -> Tables:
    airports = [a[:3] for a in _AIRPORTS]
    airlines = [(i + 1, name, country) for i, (name, country) in enumerate(_AIRLINES)]
    by_code = {a[0]: a for a in _AIRPORTS}
    codes = [a[0] for a in _AIRPORTS]
    flights: list[Row] = []
    used: set[Decimal] = set()
    for _ in range(240):
        airline = rng.choice(airlines)
        # Airlines mostly fly out of their home country, as real ones do.
        home = [c for c in codes if by_code[c][2] == airline[2]]
        origin = rng.choice(home) if home and rng.random() < 0.6 else rng.choice(codes)
        destination = rng.choice([c for c in codes if c != origin])
        dist = _distance_km(by_code[origin], by_code[destination])
        base = 40 + dist * 0.08 * rng.uniform(0.8, 1.3)
        flights.append((len(flights) + 1, airline[0], origin, destination, dist, _money(rng, base, base + 60, used)))
    return {"airports": airports, "airlines": airlines, "flights": flights}


_ROW_BUILDERS: dict[str, Callable[[Random], Tables]] = {
    "shop": _shop_rows,
    "school": _school_rows,
    "flights": _flights_rows,
}


@cache
def _rows(db_id: str) -> Tables:
    return _ROW_BUILDERS[db_id](Random(f"{_SEED}-{db_id}"))


# --------------------------------------------------------------------------------------------------------
# Slot pools: the values a template may be filled with, each a list of {slot: text} dicts. The text goes
# verbatim into both the question and the SQL. Pools come from the rows so that most fillings have answers.
# --------------------------------------------------------------------------------------------------------

Pool = list[dict[str, str]]


def _col(rows: list[Row], i: int) -> list[str]:
    return sorted({str(r[i]) for r in rows})


def _pool(slot: str, values: list | tuple) -> Pool:
    return [{slot: str(v)} for v in values]


def _shop_pools(t: Tables) -> dict[str, Pool]:
    return {
        "city": _pool("city", _col(t["customers"], 2)),
        "customer": _pool("customer", _col(t["customers"], 1)),
        "prefix": _pool("prefix", sorted({r[1][:2] for r in t["customers"]})),
        "age": _pool("age", range(20, 66)),
        "category": _pool("category", _col(t["products"], 2)),
        "product": _pool("product", _col(t["products"], 1)),
        "price": _pool("price", range(20, 310, 5)),
        "lo": _pool("lo", range(10, 55, 5)),
        "hi": _pool("hi", range(60, 210, 10)),
        "country": _pool("country", _col(t["suppliers"], 2)),
        "supplier": _pool(
            "supplier", sorted({s[1] for s in t["suppliers"] if any(p[4] == s[0] for p in t["products"])})
        ),
        "status": _pool("status", [s for s, _ in _ORDER_STATUSES]),
        "date": _pool("date", _col(t["orders"], 4)),
        "n": _pool("n", range(2, 9)),
        "count": _pool("count", range(2, 9)),
        "qty": _pool("qty", range(2, 9)),
    }


def _school_pools(t: Tables) -> dict[str, Pool]:
    return {
        "major": _pool("major", _col(t["students"], 2)),
        "department": _pool("department", _col(t["teachers"], 2)),
        "student": _pool("student", _col(t["students"], 1)),
        "teacher": _pool("teacher", _col(t["teachers"], 1)),
        "course": _pool("course", _col(t["courses"], 1)),
        "prefix": _pool("prefix", sorted({r[1][:3] for r in t["courses"]})),
        "gpa": _pool("gpa", [f"{x / 10:.1f}" for x in range(25, 39)]),
        "avg_gpa": _pool("gpa", ("2.8", "2.9", "3.0", "3.1", "3.2")),
        "credits": _pool("credits", (2, 3, 4, 5, 6)),
        "year": _pool("year", range(1994, 2022)),
        "lo": _pool("lo", (18, 19, 20, 21, 22)),
        "hi": _pool("hi", (23, 24, 25, 26, 27)),
        "grade": _pool("grade", range(50, 92, 2)),
        "n": _pool("n", range(2, 9)),
        "count": _pool("count", range(4, 13)),
    }


def _flights_pools(t: Tables) -> dict[str, Pool]:
    routes = sorted({(f[2], f[3]) for f in t["flights"]})
    return {
        "code": _pool("code", _col(t["airports"], 0)),
        "city": _pool("city", _col(t["airports"], 1)),
        "country": _pool("country", _col(t["airports"], 2)),
        "airline_country": _pool("country", _col(t["airlines"], 2)),
        "airline": _pool("airline", _col(t["airlines"], 1)),
        "prefix": _pool("prefix", sorted({r[1][:2] for r in t["airports"]})),
        "route": [{"origin": o, "destination": d} for o, d in routes],
        "dist": _pool("dist", range(1000, 12500, 500)),
        "avg_dist": _pool("dist", (2000, 2500, 3000, 3500, 4000, 4500, 5000, 6000)),
        "price": _pool("price", range(150, 850, 25)),
        "lo": _pool("lo", range(100, 325, 25)),
        "hi": _pool("hi", range(400, 850, 50)),
        "n": _pool("n", range(2, 9)),
        "count": _pool("count", range(6, 16)),
    }


_POOL_BUILDERS: dict[str, Callable[[Tables], dict[str, Pool]]] = {
    "shop": _shop_pools,
    "school": _school_pools,
    "flights": _flights_pools,
}


# --------------------------------------------------------------------------------------------------------
# Templates. `slots` names pools (their cross product is the candidate fillings); `questions` are the
# paraphrases. Every paraphrase must ask for exactly what the SQL returns, so the projection is learnable.
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Template:
    key: str
    sql: str
    questions: tuple[str, ...]
    slots: tuple[str, ...] = ()


def _t(key: str, slots: str, sql: str, *questions: str) -> _Template:
    return _Template(key, sql, tuple(questions), tuple(slots.split()))


_J_CO = "customers AS T1 JOIN orders AS T2 ON T1.id = T2.customer_id"
_J_PS = "products AS T1 JOIN suppliers AS T2 ON T1.supplier_id = T2.id"
_J_COP = _J_CO + " JOIN products AS T3 ON T2.product_id = T3.id"

_SHOP_TEMPLATES = (
    # single table, one condition
    _t("customers_in_city", "city", "SELECT name FROM customers WHERE city = '{city}'",
       "Which customers live in {city}?", "List the names of customers from {city}.",
       "Show all customers based in {city}."),
    _t("products_in_category", "category", "SELECT name FROM products WHERE category = '{category}'",
       "What products are in the {category} category?", "List all {category} products.",
       "Show the names of products in category {category}."),
    _t("products_above_price", "price", "SELECT name, price FROM products WHERE price > {price}",
       "Which products cost more than {price}? Show name and price.",
       "List the name and price of products priced above {price}."),
    _t("customers_younger", "age", "SELECT name FROM customers WHERE age < {age}",
       "Which customers are younger than {age}?", "List the names of customers under {age} years old."),
    _t("products_price_between", "lo hi", "SELECT name FROM products WHERE price BETWEEN {lo} AND {hi}",
       "Which products have a price between {lo} and {hi}?", "List the products priced from {lo} to {hi}."),
    _t("customers_name_prefix", "prefix", "SELECT name FROM customers WHERE name LIKE '{prefix}%'",
       "Which customers have a name starting with {prefix}?",
       "List the customers whose names begin with {prefix}."),
    _t("product_price", "product", "SELECT price FROM products WHERE name = '{product}'",
       "What is the price of the {product}?", "How much does the {product} cost?"),
    _t("customer_city", "customer", "SELECT city FROM customers WHERE name = '{customer}'",
       "Which city is {customer} from?", "Where does the customer {customer} live?"),
    _t("suppliers_in_country", "country", "SELECT name FROM suppliers WHERE country = '{country}'",
       "Which suppliers are based in {country}?", "List the suppliers from {country}."),
    _t("distinct_cities_older", "age", "SELECT DISTINCT city FROM customers WHERE age > {age}",
       "List the distinct cities of customers older than {age}.",
       "In which different cities do customers over {age} live?"),
    _t("orders_status_after", "status date",
       "SELECT id FROM orders WHERE status = '{status}' AND order_date > '{date}'",
       "List the ids of {status} orders placed after {date}.",
       "Which orders have status {status} and were placed after {date}? Give their ids."),
    # aggregates
    _t("count_customers_city", "city", "SELECT COUNT(*) FROM customers WHERE city = '{city}'",
       "How many customers live in {city}?", "Count the customers from {city}.",
       "What is the number of customers based in {city}?"),
    _t("avg_price_category", "category", "SELECT AVG(price) FROM products WHERE category = '{category}'",
       "What is the average price of {category} products?",
       "Find the mean price of products in the {category} category."),
    _t("max_min_price_category", "category",
       "SELECT MAX(price), MIN(price) FROM products WHERE category = '{category}'",
       "What are the highest and lowest prices among {category} products?",
       "Show the maximum and minimum price of products in the {category} category."),
    _t("sum_quantity_before", "date", "SELECT SUM(quantity) FROM orders WHERE order_date < '{date}'",
       "What is the total quantity of items ordered before {date}?",
       "How many items in total were ordered before {date}?"),
    _t("count_by_city_older", "age", "SELECT city, COUNT(*) FROM customers WHERE age > {age} GROUP BY city",
       "For customers older than {age}, how many are there in each city?",
       "Count the customers over {age} in every city."),
    _t("avg_price_by_category", "", "SELECT category, AVG(price) FROM products GROUP BY category",
       "What is the average product price in each category?",
       "Show every category with the average price of its products.",
       "For each category, give the mean product price."),
    _t("most_expensive_n", "n", "SELECT name FROM products ORDER BY price DESC LIMIT {n}",
       "What are the {n} most expensive products?", "List the top {n} products by price."),
    _t("cheapest_in_category", "category",
       "SELECT name FROM products WHERE category = '{category}' ORDER BY price LIMIT 1",
       "What is the cheapest {category} product?",
       "Which product in the {category} category has the lowest price?"),
    # joins
    _t("customers_ordered_on", "date", f"SELECT DISTINCT T1.name FROM {_J_CO} WHERE T2.order_date = '{{date}}'",
       "Which customers placed an order on {date}?", "List the names of customers who ordered on {date}."),
    _t("count_orders_customer", "customer", f"SELECT COUNT(*) FROM {_J_CO} WHERE T1.name = '{{customer}}'",
       "How many orders has {customer} placed?", "Count the orders made by {customer}."),
    _t("products_supplier_country", "country", f"SELECT T1.name FROM {_J_PS} WHERE T2.country = '{{country}}'",
       "Which products are supplied by companies from {country}?",
       "List the products whose supplier is based in {country}."),
    _t("products_of_supplier", "supplier", f"SELECT T1.name, T1.price FROM {_J_PS} WHERE T2.name = '{{supplier}}'",
       "What products does {supplier} supply, and at what price?",
       "Show the name and price of every product from the supplier {supplier}."),
    _t("orders_per_customer_city", "city",
       f"SELECT T1.name, COUNT(*) FROM {_J_CO} WHERE T1.city = '{{city}}' GROUP BY T1.name",
       "For each customer in {city}, how many orders have they placed?",
       "Show the number of orders of every customer from {city}."),
    _t("products_bought_by", "customer", f"SELECT DISTINCT T3.name FROM {_J_COP} WHERE T1.name = '{{customer}}'",
       "Which products has {customer} ordered?", "List the distinct products bought by {customer}."),
    # group by ... having, nesting
    _t("cities_with_many_customers", "count",
       "SELECT city FROM customers GROUP BY city HAVING COUNT(*) > {count}",
       "Which cities have more than {count} customers?", "List the cities where over {count} customers live."),
    _t("customers_with_n_orders", "count",
       f"SELECT T1.name FROM {_J_CO} GROUP BY T1.name HAVING COUNT(*) >= {{count}}",
       "Which customers have placed at least {count} orders?", "List the customers with {count} or more orders."),
    _t("above_average_in_category", "category",
       "SELECT name FROM products WHERE category = '{category}' AND price > (SELECT AVG(price) FROM products)",
       "Which {category} products are more expensive than the average product?",
       "List the {category} products priced above the overall average price."),
    _t("products_ordered_after", "date",
       "SELECT name FROM products WHERE id IN (SELECT product_id FROM orders WHERE order_date > '{date}')",
       "Which products have been ordered after {date}?",
       "List the names of products that appear in orders placed after {date}."),
    _t("no_orders_in_city", "city",
       "SELECT name FROM customers WHERE city = '{city}' AND id NOT IN (SELECT customer_id FROM orders)",
       "Which customers from {city} have never placed an order?",
       "List the customers living in {city} who have no orders."),
    _t("top_customer_in_city", "city",
       f"SELECT T1.name FROM {_J_CO} WHERE T1.city = '{{city}}' GROUP BY T1.name ORDER BY COUNT(*) DESC LIMIT 1",
       "Which customer from {city} has placed the most orders?",
       "Who is the customer in {city} with the largest number of orders?"),
)  # fmt: skip

_J_CT = "courses AS T1 JOIN teachers AS T2 ON T1.teacher_id = T2.id"
_J_SE = "students AS T1 JOIN enrollments AS T2 ON T1.id = T2.student_id"
_J_CE = "courses AS T1 JOIN enrollments AS T2 ON T1.id = T2.course_id"
_J_SEC = _J_SE + " JOIN courses AS T3 ON T2.course_id = T3.id"

_SCHOOL_TEMPLATES = (
    _t("students_in_major", "major", "SELECT name FROM students WHERE major = '{major}'",
       "Which students major in {major}?", "List the names of {major} students.",
       "Show all students whose major is {major}."),
    _t("teachers_in_department", "department", "SELECT name FROM teachers WHERE department = '{department}'",
       "Who teaches in the {department} department?", "List the teachers of the {department} department."),
    _t("students_gpa_above", "gpa", "SELECT name, gpa FROM students WHERE gpa > {gpa}",
       "Which students have a GPA above {gpa}? Show their names and GPAs.",
       "List the name and GPA of students with a GPA higher than {gpa}."),
    _t("courses_with_credits", "credits", "SELECT title FROM courses WHERE credits = {credits}",
       "Which courses are worth {credits} credits?", "List the titles of courses with {credits} credits."),
    _t("teachers_hired_before", "year", "SELECT name FROM teachers WHERE hire_year < {year}",
       "Which teachers were hired before {year}?", "List the teachers hired earlier than {year}."),
    _t("students_age_between", "lo hi", "SELECT name FROM students WHERE age BETWEEN {lo} AND {hi}",
       "Which students are between {lo} and {hi} years old?", "List the students aged {lo} to {hi}."),
    _t("courses_title_prefix", "prefix", "SELECT title FROM courses WHERE title LIKE '{prefix}%'",
       "Which courses have a title starting with {prefix}?",
       "List the courses whose title begins with {prefix}."),
    _t("major_of_student", "student", "SELECT major FROM students WHERE name = '{student}'",
       "What is the major of {student}?", "What does the student {student} study?"),
    _t("teacher_info", "teacher", "SELECT department, hire_year FROM teachers WHERE name = '{teacher}'",
       "In which department does {teacher} teach, and in what year were they hired?",
       "Show the department and hire year of {teacher}."),
    _t("count_students_major", "major", "SELECT COUNT(*) FROM students WHERE major = '{major}'",
       "How many students major in {major}?", "Count the {major} students.",
       "What is the number of students majoring in {major}?"),
    _t("avg_gpa_major", "major", "SELECT AVG(gpa) FROM students WHERE major = '{major}'",
       "What is the average GPA of {major} students?",
       "Find the mean GPA of students majoring in {major}."),
    _t("age_range_major", "major", "SELECT MIN(age), MAX(age) FROM students WHERE major = '{major}'",
       "What are the youngest and oldest ages among {major} students?",
       "Show the minimum and maximum age of students majoring in {major}."),
    _t("count_by_major_gpa", "gpa", "SELECT major, COUNT(*) FROM students WHERE gpa > {gpa} GROUP BY major",
       "How many students with a GPA above {gpa} are there in each major?",
       "For every major, count the students whose GPA is higher than {gpa}."),
    _t("teachers_per_department", "", "SELECT department, COUNT(*) FROM teachers GROUP BY department",
       "How many teachers does each department have?", "Count the teachers in every department.",
       "Show each department and its number of teachers."),
    _t("top_gpa_n", "n", "SELECT name FROM students ORDER BY gpa DESC LIMIT {n}",
       "Who are the {n} students with the highest GPA?", "List the top {n} students by GPA."),
    _t("lowest_gpa_in_major", "major",
       "SELECT name FROM students WHERE major = '{major}' ORDER BY gpa LIMIT 1",
       "Which {major} student has the lowest GPA?",
       "Who has the lowest GPA among students majoring in {major}?"),
    _t("courses_of_teacher", "teacher", f"SELECT T1.title FROM {_J_CT} WHERE T2.name = '{{teacher}}'",
       "Which courses does {teacher} teach?", "List the titles of the courses taught by {teacher}."),
    _t("credits_of_teacher", "teacher", f"SELECT SUM(T1.credits) FROM {_J_CT} WHERE T2.name = '{{teacher}}'",
       "What is the total number of credits of the courses taught by {teacher}?",
       "How many credits do the courses of {teacher} add up to?"),
    _t("courses_in_department", "department",
       f"SELECT T1.title, T1.credits FROM {_J_CT} WHERE T2.department = '{{department}}'",
       "List the title and credits of courses taught by {department} teachers.",
       "Show the titles and credits of the courses given by the {department} department."),
    _t("count_enrollments_student", "student", f"SELECT COUNT(*) FROM {_J_SE} WHERE T1.name = '{{student}}'",
       "How many courses is {student} enrolled in?", "Count the enrollments of {student}."),
    _t("avg_grade_course", "course", f"SELECT AVG(T2.grade) FROM {_J_CE} WHERE T1.title = '{{course}}'",
       "What is the average grade in {course}?", "Find the mean grade of students enrolled in {course}."),
    _t("courses_of_student", "student", f"SELECT T3.title FROM {_J_SEC} WHERE T1.name = '{{student}}'",
       "Which courses is {student} taking?", "List the titles of the courses {student} is enrolled in."),
    _t("high_grades_in_course", "course grade",
       f"SELECT T1.name FROM {_J_SEC} WHERE T3.title = '{{course}}' AND T2.grade > {{grade}}",
       "Which students scored above {grade} in {course}?",
       "List the students whose grade in {course} is higher than {grade}."),
    _t("majors_high_avg_gpa", "avg_gpa", "SELECT major FROM students GROUP BY major HAVING AVG(gpa) > {gpa}",
       "Which majors have an average GPA above {gpa}?",
       "List the majors whose students have a mean GPA higher than {gpa}."),
    _t("popular_courses", "count", f"SELECT T1.title FROM {_J_CE} GROUP BY T1.title HAVING COUNT(*) > {{count}}",
       "Which courses have more than {count} enrolled students?",
       "List the courses with over {count} enrollments."),
    _t("above_average_gpa_major", "major",
       "SELECT name FROM students WHERE major = '{major}' AND gpa > (SELECT AVG(gpa) FROM students)",
       "Which {major} students have a GPA above the overall average?",
       "List the students majoring in {major} whose GPA is higher than the average GPA of all students."),
    _t("not_enrolled_major", "major",
       "SELECT name FROM students WHERE major = '{major}' AND id NOT IN (SELECT student_id FROM enrollments)",
       "Which {major} students are not enrolled in any course?",
       "List the students majoring in {major} who have no enrollments."),
    _t("courses_by_recent_teachers", "year",
       "SELECT title FROM courses WHERE teacher_id IN (SELECT id FROM teachers WHERE hire_year > {year})",
       "Which courses are taught by teachers hired after {year}?",
       "List the titles of courses whose teacher was hired later than {year}."),
    _t("best_student_in_major", "major",
       f"SELECT T1.name FROM {_J_SE} WHERE T1.major = '{{major}}' GROUP BY T1.name ORDER BY AVG(T2.grade) DESC LIMIT 1",
       "Which {major} student has the highest average grade?",
       "Who has the best average grade among students majoring in {major}?"),
)  # fmt: skip

_J_FA = "flights AS T1 JOIN airlines AS T2 ON T1.airline_id = T2.id"
_J_FD = "flights AS T1 JOIN airports AS T2 ON T1.destination = T2.code"
_J_FO = "flights AS T1 JOIN airports AS T2 ON T1.origin = T2.code"
_J_FDA = _J_FD + " JOIN airlines AS T3 ON T1.airline_id = T3.id"

_FLIGHTS_TEMPLATES = (
    _t("airports_in_country", "country", "SELECT code FROM airports WHERE country = '{country}'",
       "What are the codes of the airports in {country}?", "List the airport codes in {country}."),
    _t("city_of_airport", "code", "SELECT city FROM airports WHERE code = '{code}'",
       "Which city is the airport {code} in?", "In what city is the {code} airport located?"),
    _t("airlines_in_country", "airline_country", "SELECT name FROM airlines WHERE country = '{country}'",
       "Which airlines are based in {country}?", "List the airlines from {country}."),
    _t("flights_from", "code", "SELECT id FROM flights WHERE origin = '{code}'",
       "Which flights depart from {code}? Give their ids.", "List the ids of flights leaving {code}."),
    _t("long_flights", "dist", "SELECT id, origin, destination FROM flights WHERE distance > {dist}",
       "Show the id, origin and destination of flights longer than {dist} km.",
       "List the flights covering more than {dist} km with their origin and destination."),
    _t("flights_price_between", "lo hi", "SELECT id FROM flights WHERE price BETWEEN {lo} AND {hi}",
       "Which flights cost between {lo} and {hi}? Give their ids.",
       "List the ids of flights with a price from {lo} to {hi}."),
    _t("flights_on_route", "route",
       "SELECT id, price FROM flights WHERE origin = '{origin}' AND destination = '{destination}'",
       "Which flights go from {origin} to {destination}, and what do they cost?",
       "Show the id and price of flights from {origin} to {destination}."),
    _t("airports_city_prefix", "prefix", "SELECT code FROM airports WHERE city LIKE '{prefix}%'",
       "Which airports are in cities starting with {prefix}?",
       "List the codes of airports whose city begins with {prefix}."),
    _t("count_flights_from", "code", "SELECT COUNT(*) FROM flights WHERE origin = '{code}'",
       "How many flights depart from {code}?", "Count the flights leaving {code}.",
       "What is the number of flights with origin {code}?"),
    _t("avg_price_to", "code", "SELECT AVG(price) FROM flights WHERE destination = '{code}'",
       "What is the average price of flights to {code}?",
       "Find the mean ticket price of flights arriving at {code}."),
    _t("longest_from", "code", "SELECT MAX(distance) FROM flights WHERE origin = '{code}'",
       "What is the longest flight distance from {code}?",
       "Find the maximum distance of flights departing {code}."),
    _t("cheap_flights_per_origin", "price",
       "SELECT origin, COUNT(*) FROM flights WHERE price < {price} GROUP BY origin",
       "For flights cheaper than {price}, how many depart from each airport?",
       "Count the flights under {price} for every origin airport."),
    _t("avg_price_per_airline", "", f"SELECT T2.name, AVG(T1.price) FROM {_J_FA} GROUP BY T2.name",
       "What is the average flight price of each airline?",
       "Show every airline with the mean price of its flights.",
       "For each airline, give the average ticket price."),
    _t("most_expensive_n", "n", "SELECT id FROM flights ORDER BY price DESC LIMIT {n}",
       "What are the ids of the {n} most expensive flights?", "List the {n} flights with the highest price."),
    _t("cheapest_from", "code",
       "SELECT destination, price FROM flights WHERE origin = '{code}' ORDER BY price LIMIT 1",
       "What is the cheapest flight from {code}? Give its destination and price.",
       "Show the destination and price of the lowest-priced flight departing {code}."),
    _t("flights_of_airline", "airline", f"SELECT T1.id FROM {_J_FA} WHERE T2.name = '{{airline}}'",
       "Which flights are operated by {airline}? Give their ids.", "List the ids of {airline} flights."),
    _t("count_airline_from", "airline code",
       f"SELECT COUNT(*) FROM {_J_FA} WHERE T2.name = '{{airline}}' AND T1.origin = '{{code}}'",
       "How many {airline} flights depart from {code}?",
       "Count the flights operated by {airline} that leave {code}."),
    _t("count_arriving_country", "country", f"SELECT COUNT(*) FROM {_J_FD} WHERE T2.country = '{{country}}'",
       "How many flights arrive in {country}?",
       "Count the flights whose destination airport is in {country}."),
    _t("flights_from_city", "city", f"SELECT T1.id, T1.price FROM {_J_FO} WHERE T2.city = '{{city}}'",
       "Which flights depart from airports in {city}? Show their ids and prices.",
       "List the id and price of flights leaving from airports in {city}."),
    _t("airlines_to_city", "city", f"SELECT DISTINCT T3.name FROM {_J_FDA} WHERE T2.city = '{{city}}'",
       "Which airlines fly to {city}?", "List the airlines with flights arriving in {city}."),
    _t("busy_origins", "count", "SELECT origin FROM flights GROUP BY origin HAVING COUNT(*) > {count}",
       "Which airports have more than {count} departing flights?",
       "List the origin airports with over {count} flights."),
    _t("long_haul_airlines", "avg_dist",
       f"SELECT T2.name FROM {_J_FA} GROUP BY T2.name HAVING AVG(T1.distance) > {{dist}}",
       "Which airlines have an average flight distance above {dist} km?",
       "List the airlines whose flights average more than {dist} km."),
    _t("pricey_from", "code",
       "SELECT id FROM flights WHERE origin = '{code}' AND price > (SELECT AVG(price) FROM flights)",
       "Which flights from {code} cost more than the average flight? Give their ids.",
       "List the ids of flights departing {code} that are priced above the average price of all flights."),
    _t("airlines_not_from", "code",
       "SELECT name FROM airlines WHERE id NOT IN (SELECT airline_id FROM flights WHERE origin = '{code}')",
       "Which airlines have no flights from {code}?", "List the airlines that do not fly out of {code}."),
    _t("cities_reachable_from", "code",
       "SELECT city FROM airports WHERE code IN (SELECT destination FROM flights WHERE origin = '{code}')",
       "Which cities can be reached directly from {code}?",
       "List the cities of airports that have flights arriving from {code}."),
    _t("top_airline_from", "code",
       f"SELECT T2.name FROM {_J_FA} WHERE T1.origin = '{{code}}' GROUP BY T2.name ORDER BY COUNT(*) DESC LIMIT 1",
       "Which airline has the most flights departing from {code}?",
       "Name the airline that operates the largest number of flights out of {code}."),
)  # fmt: skip

_TEMPLATES: dict[str, tuple[_Template, ...]] = {
    "shop": _SHOP_TEMPLATES,
    "school": _SCHOOL_TEMPLATES,
    "flights": _FLIGHTS_TEMPLATES,
}

# Test-only templates: each joins two filters that train shows in other templates but never together, so the
# test split measures composition and not only copying new values into a seen question.
# fmt: off
_TEST_TEMPLATES: dict[str, tuple[_Template, ...]] = {
    "shop": (
        _t("customers_city_younger", "city age", "SELECT name FROM customers WHERE city = '{city}' AND age < {age}",
           "Which customers from {city} are younger than {age}?",
           "List the customers living in {city} who are under {age} years old."),
        _t("category_above_price", "category price",
           "SELECT name FROM products WHERE category = '{category}' AND price > {price}",
           "Which {category} products cost more than {price}?",
           "List the products in category {category} priced above {price}."),
        _t("customers_city_prefix", "city prefix",
           "SELECT name FROM customers WHERE city = '{city}' AND name LIKE '{prefix}%'",
           "Which customers from {city} have a name starting with {prefix}?",
           "List the customers in {city} whose names begin with {prefix}."),
    ),
    "school": (
        _t("major_gpa_above", "major gpa", "SELECT name FROM students WHERE major = '{major}' AND gpa > {gpa}",
           "Which {major} students have a GPA above {gpa}?",
           "List the students majoring in {major} with a GPA higher than {gpa}."),
        _t("department_hired_after", "department year",
           "SELECT name FROM teachers WHERE department = '{department}' AND hire_year > {year}",
           "Which teachers in the {department} department were hired after {year}?",
           "List the {department} teachers hired after {year}."),
        _t("major_younger", "major hi", "SELECT name FROM students WHERE major = '{major}' AND age < {hi}",
           "Which {major} students are younger than {hi}?",
           "List the students majoring in {major} who are under {hi}."),
    ),
    "flights": (
        _t("from_code_cheaper", "code price", "SELECT id FROM flights WHERE origin = '{code}' AND price < {price}",
           "List the ids of flights from {code} that cost less than {price}.",
           "Which flights departing from {code} are cheaper than {price}? Give their ids."),
        _t("longer_and_cheaper", "dist price", "SELECT id FROM flights WHERE distance > {dist} AND price < {price}",
           "Which flights are longer than {dist} km and cheaper than {price}? Give their ids.",
           "List the ids of flights with a distance over {dist} and a price under {price}."),
        _t("airports_country_prefix", "country prefix",
           "SELECT code FROM airports WHERE country = '{country}' AND city LIKE '{prefix}%'",
           "Which airports in {country} are in a city starting with {prefix}? Give their codes.",
           "List the codes of airports in {country} whose city begins with {prefix}."),
    ),
}
# fmt: on


# --------------------------------------------------------------------------------------------------------
# Hardness: Spider-like, computed from the canonical SQL so that the labels are consistent.
# --------------------------------------------------------------------------------------------------------

_AGG_RE = re.compile(r"\b(COUNT|AVG|SUM|MIN|MAX)\(")
_SUBQUERY_RE = re.compile(r"\(SELECT [^()]*(\([^()]*\)[^()]*)*\)")


def hardness(sql: str) -> str:
    """easy: one table, no aggregate/grouping/ordering, at most one condition. medium: one or two of
    {aggregate or GROUP BY, HAVING, ORDER BY, LIMIT, a join, several conditions}. hard: three of those, a
    3-table join, or a plain nested query. extra: more, or nesting combined with anything else."""
    top = _SUBQUERY_RE.sub("(?)", sql)
    nested = sql.count("SELECT ") - 1
    joins = top.count(" JOIN ")
    where = re.split(r" GROUP BY | ORDER BY ", top.split(" WHERE ", 1)[1])[0] if " WHERE " in top else ""
    conds = (1 + where.count(" AND ") + where.count(" OR ") - where.count(" BETWEEN ")) if where else 0
    score = (
        {0: 0, 1: 1}.get(joins, 3)
        + bool(_AGG_RE.search(top) or " GROUP BY " in top)
        + (" HAVING " in top)
        + (" ORDER BY " in top)
        + (" LIMIT " in top)
        + (conds > 1)
    )
    if nested:
        inner_joins = sql.count(" JOIN ") - joins
        return "hard" if score <= 1 and not inner_joins else "extra"
    if score == 0:
        return "easy"
    return "medium" if score <= 2 else "hard" if score == 3 else "extra"


# --------------------------------------------------------------------------------------------------------
# Databases and example generation
# --------------------------------------------------------------------------------------------------------


def _literal(v: object) -> str:
    if isinstance(v, str):
        if "'" in v:
            raise ValueError(f"demo values must not contain quotes: {v!r}")
        return f"'{v}'"
    return str(v)


def _populate(con, db_id: str) -> None:  # con: duckdb.DuckDBPyConnection
    con.execute(DEMO_SCHEMAS[db_id])
    tables = _rows(db_id)
    for name in _TABLE_ORDER[db_id]:
        # One INSERT with a VALUES list: fast, and the insertion (= storage) order is the list order.
        values = ", ".join("(" + ", ".join(_literal(v) for v in row) + ")" for row in tables[name])
        con.execute(f"INSERT INTO {name} VALUES {values}")


_LIMIT_RE = re.compile(
    r"^SELECT (?P<cols>.+?) FROM (?P<rest>.+) ORDER BY (?P<key>.+?)(?P<dir> DESC)? LIMIT (?P<n>\d+)$"
)


def _usable(con, sql: str) -> bool:
    """Whether a gold query has a well-defined, non-trivial answer."""
    rows = con.execute(sql).fetchall()
    if not rows or (len(rows) == 1 and all(v is None or v == 0 for v in rows[0])):
        return False
    m = _LIMIT_RE.match(sql)
    if m:
        # A tie at the LIMIT boundary makes the answer depend on the engine's tie-breaking: reject it.
        n = int(m["n"])
        keys = con.execute(
            f"SELECT {m['key']} FROM {m['rest']} ORDER BY {m['key']}{m['dir'] or ''} LIMIT {n + 1}"
        ).fetchall()
        if len(keys) > n and keys[n - 1] == keys[n]:
            return False
    return True


@dataclass(frozen=True)
class _Instance:
    template: str  # "<db>.<template key>"
    split: str
    question: str
    sql: str
    slots: tuple[tuple[str, str], ...]


def _valid_fillings(
    tpl: _Template, pools: dict[str, Pool], con, rng: Random, limit: int = _MAX_FILLINGS
) -> list[dict[str, str]]:
    """Up to `limit` slot fillings, in seeded order, whose gold query has a usable answer. The order does not
    depend on `limit`: a larger one returns the same first fillings and more after them."""
    candidates: list[dict[str, str]] = []
    for combo in itertools.product(*(pools[s] for s in tpl.slots)):
        merged: dict[str, str] = {}
        for part in combo:
            merged.update(part)
        candidates.append(merged)
    rng.shuffle(candidates)
    valid: list[dict[str, str]] = []
    for fill in candidates:
        if _usable(con, tpl.sql.format(**fill)):
            valid.append(fill)
            if len(valid) >= limit:
                break
    if not valid:
        raise RuntimeError(f"demo template {tpl.key!r} has no filling with a non-empty answer")
    return valid


def _dev_count(tpl: _Template, valid: list[dict[str, str]]) -> tuple[int, int]:
    """(dev fillings every template gets, extra ones it could take): small pools give dev less, so that
    train keeps several instantiations of every template that dev uses."""
    if not tpl.slots:
        return (1 if len(tpl.questions) >= 3 else 0), 0
    if len(valid) >= 6:
        return 1, 1
    return (1 if len(valid) >= 3 else 0), 0


def _instances_for(tpl: _Template, valid: list[dict[str, str]], n_dev: int, rng: Random) -> list[_Instance]:
    """`n_dev` fillings go to dev; train gets the other fillings, each with one or more paraphrases."""
    n_para = len(tpl.questions)

    def make(split: str, fill: dict[str, str], para: int) -> _Instance:
        # "in the United States", not "in United States"; the value itself is still there to copy.
        words = {k: f"the {v}" if k == "country" and v.startswith("United ") else v for k, v in fill.items()}
        return _Instance(tpl.key, split, tpl.questions[para].format(**words), tpl.sql.format(**fill),
                         tuple(sorted(fill.items())))  # fmt: skip

    out: list[_Instance] = []
    if not tpl.slots:
        # One SQL only: hold one paraphrase out for dev; the others go to train.
        dev_para = rng.randrange(n_para) if n_dev else None
        if dev_para is not None:
            out.append(make("dev", valid[0], dev_para))
        out += [make("train", valid[0], p) for p in range(n_para) if p != dev_para]
        return out
    dev, train = valid[:n_dev], valid[n_dev:]
    out += [make("dev", fill, rng.randrange(n_para)) for fill in dev]
    # Cycle paraphrases so each is used about equally, and a filling only repeats with a new paraphrase.
    offset = rng.randrange(n_para)
    picked = 0
    for round_ in range(n_para):
        for j, fill in enumerate(train):
            if picked >= _TRAIN_PER_TEMPLATE:
                break
            out.append(make("train", fill, (j + round_ + offset) % n_para))
            picked += 1
    return out


def _test_instances(found, beyond, test_found, counts, extra) -> list[_Instance]:
    """The test split, in three parts (the `kind` of each record):
    - "new_values": a seen template with a filling neither train nor dev used (past those train took, or past
      the _MAX_FILLINGS that train and dev draw from);
    - "new_combination": the test-only templates above, filters train never shows together;
    - "value_variant": a copy of a new_values question whose string value is written in lower case ("dublin"),
      while the data and the gold SQL keep "Dublin": the literal in the question is not the one in the
      database, which a model can only get right by knowing or looking at the data (the agent issue's case).
    Its own random stream: train and dev do not depend on it."""
    rng = Random(f"{_SEED}-test")
    out: list[_Instance] = []

    def make(db_id: str, tpl: _Template, fill: dict[str, str], kind: str, lower: str | None = None) -> _Instance:
        words = {k: (v.lower() if k == lower else v) for k, v in fill.items()}
        words = {k: f"the {v}" if k == "country" and v.startswith("United ") else v for k, v in words.items()}
        question = tpl.questions[rng.randrange(len(tpl.questions))].format(**words)
        return _Instance(f"{db_id}.{tpl.key}", f"test:{kind}", question, tpl.sql.format(**fill),
                         tuple(sorted(fill.items())))  # fmt: skip

    for i, (db_id, tpl, valid) in enumerate(found):
        unused = valid[counts[i][0] + (i in extra) + _TRAIN_PER_TEMPLATE :] + beyond[(db_id, tpl.key)]
        for fill in unused[:_TEST_NEW_VALUES]:
            out.append(make(db_id, tpl, fill, "new_values"))
            variant = next((k for k in _VARIANT_SLOTS if k in fill and fill[k].lower() != fill[k]), None)
            if variant is not None:
                out.append(make(db_id, tpl, fill, "value_variant", lower=variant))
    for db_id, tpl, valid in test_found:
        for j, fill in enumerate(valid[:_TEST_PER_COMBINATION]):
            out.append(make(db_id, tpl, fill, "new_combination"))
            variant = next((k for k in _VARIANT_SLOTS if k in fill and fill[k].lower() != fill[k]), None)
            if variant is not None and j < _TEST_VARIANTS_PER_COMBINATION:
                out.append(make(db_id, tpl, fill, "value_variant", lower=variant))
    return out


@lru_cache(maxsize=1)
def _generate() -> tuple[_Instance, ...]:
    import duckdb

    # Phase 1: the usable fillings of every template, executed against an in-memory copy of its database. The
    # test-only templates draw from their own random stream, so that adding them left train and dev unchanged.
    found: list[tuple[str, _Template, list[dict[str, str]]]] = []
    test_found: list[tuple[str, _Template, list[dict[str, str]]]] = []
    beyond: dict[tuple[str, str], list[dict[str, str]]] = {}
    for db_id in DB_IDS:
        rng = Random(f"{_SEED}-{db_id}-fillings")
        test_rng = Random(f"{_SEED}-{db_id}-test-fillings")
        pools = _POOL_BUILDERS[db_id](_rows(db_id))
        con = duckdb.connect(":memory:")
        try:
            _populate(con, db_id)
            for tpl in _TEMPLATES[db_id]:  # train and dev use the first _MAX_FILLINGS, test what lies beyond
                valid = _valid_fillings(tpl, pools, con, rng, _MAX_FILLINGS + _TEST_NEW_VALUES)
                found.append((db_id, tpl, valid[:_MAX_FILLINGS]))
                beyond[(db_id, tpl.key)] = valid[_MAX_FILLINGS:]
            test_found += [(db_id, t, _valid_fillings(t, pools, con, test_rng)) for t in _TEST_TEMPLATES[db_id]]
        finally:
            con.close()
    # Phase 2: every template gets its base dev share; a seeded draw of templates takes one more until dev
    # reaches its target size.
    rng = Random(f"{_SEED}-split")
    counts = [_dev_count(tpl, valid) for _, tpl, valid in found]
    base = sum(c for c, _ in counts)
    extra_ok = [i for i, (_, e) in enumerate(counts) if e]
    extra = set(rng.sample(extra_ok, max(0, min(len(extra_ok), _DEV_TARGET - base))))
    out: list[_Instance] = []
    for i, (db_id, tpl, valid) in enumerate(found):
        n_dev = counts[i][0] + (i in extra)
        for inst in _instances_for(tpl, valid, n_dev, rng):
            out.append(_Instance(f"{db_id}.{inst.template}", inst.split, inst.question, inst.sql, inst.slots))
    out += _test_instances(found, beyond, test_found, counts, extra)
    # Guard the split invariants globally (two templates could in principle word a question the same way).
    seen: set[str] = set()
    kept: list[_Instance] = []
    order = {"train": 0, "dev": 1}
    for inst in sorted(out, key=lambda i: order.get(i.split, 2)):  # stable: train, dev, test; order kept
        if inst.question not in seen:
            seen.add(inst.question)
            kept.append(inst)
    return tuple(kept)


@lru_cache(maxsize=1)
def _records() -> dict[str, tuple[dict, ...]]:
    by_split: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    counters: dict[tuple[str, str], int] = {}
    for inst in _generate():
        db_id = inst.template.split(".", 1)[0]
        split, _, kind = inst.split.partition(":")
        n = counters[(db_id, split)] = counters.get((db_id, split), 0) + 1
        by_split[split].append({
            "id": f"{db_id}-{split}-{n:04d}" + (f"-{kind}" if kind else ""),
            "db": db_id,
            "question": inst.question,
            "sql": inst.sql,
            "hardness": hardness(inst.sql),
        })  # fmt: skip
    # Fixed order: by database (DB_IDS order), then template order, then instance order.
    order = {db: i for i, db in enumerate(DB_IDS)}
    return {split: tuple(sorted(recs, key=lambda r: order[r["db"]])) for split, recs in by_split.items()}


def demo_examples() -> dict[str, list[dict]]:
    """The demo records in memory ({"train": [...], "dev": [...], "test": [...]}), without touching disk. Fresh
    copies. A test record's id ends in its kind (see `_test_instances`)."""
    return {split: copy.deepcopy(list(recs)) for split, recs in _records().items()}


# --------------------------------------------------------------------------------------------------------
# On-disk build
# --------------------------------------------------------------------------------------------------------

_MARKER = ".complete"


def _is_complete(root: Path) -> bool:
    try:
        return (root / _MARKER).read_text(encoding="utf-8").strip() == DEMO_VERSION
    except OSError:
        return False


def _write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def build_demo(root: Path) -> Path:
    """Build (idempotently: skip if root/'.complete' exists with the same DEMO_VERSION) into root:
    root/databases/<db_id>.duckdb, root/train.jsonl, root/dev.jsonl, root/test.jsonl, then root/.complete.

    The build goes to a temporary directory next to root that is renamed into place at the end, so a crash
    never leaves half a build and two processes building at once both end up with one complete copy."""
    import duckdb

    root = Path(root)
    if _is_complete(root):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        (tmp / "databases").mkdir(parents=True)
        for db_id in DB_IDS:
            # 16 KiB blocks instead of the default 256 KiB: each column takes at least a block, so the
            # default makes these tiny databases ~3 MB each instead of ~0.2 MB. Readers need no setting.
            con = duckdb.connect(str(tmp / "databases" / f"{db_id}.duckdb"), config={"default_block_size": "16384"})
            try:
                _populate(con, db_id)
                con.execute("CHECKPOINT")
            finally:
                con.close()
        examples = demo_examples()
        for split in SPLITS:
            _write_jsonl(tmp / f"{split}.jsonl", examples[split])
        (tmp / _MARKER).write_text(DEMO_VERSION + "\n", encoding="utf-8")
        _install(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _install(tmp: Path, root: Path) -> None:
    """Move the finished build to root, replacing an incomplete or outdated one but never a complete one."""
    for _ in range(5):
        try:
            os.rename(tmp, root)  # atomic; fails if root exists and is not an empty directory
            return
        except OSError:
            if _is_complete(root):
                return  # another process finished first: keep its copy, ours is dropped by the caller
            if not root.exists():
                continue
            # A stale build (older DEMO_VERSION or someone's leftovers): move it aside first, so the swap stays
            # atomic for readers, then delete it.
            trash = root.parent / f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(root, trash)
            except OSError:
                continue  # someone else moved or replaced it meanwhile; look again
            shutil.rmtree(trash, ignore_errors=True)
    if not _is_complete(root):
        raise RuntimeError(f"could not install the demo build at {root}")


def demo_dir() -> Path:
    """The default location, $NL2SQL_ALIGN_CACHE or ~/.cache/nl2sql_align, / f"demo-{DEMO_VERSION}";
    built on first use."""
    base = os.environ.get("NL2SQL_ALIGN_CACHE")
    cache = Path(base).expanduser() if base else Path.home() / ".cache" / "nl2sql_align"
    return build_demo(cache / f"demo-{DEMO_VERSION}")
