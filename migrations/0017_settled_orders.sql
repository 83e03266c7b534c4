-- Settled orders: the ledger's side of a platform settlement (issue 13). One row per billable
-- line, a credited order (`charge`) or an accepted refund (`refund`), on the UTC day it was
-- recorded; the platform and the wholesale cost come from the product at query time (a
-- product's terms never change), so the two logs the view follows may be read in any order.
-- depends: 0014_recharge_discrepancies

CREATE TABLE settled_orders_v1 (
    order_no    text NOT NULL,
    kind        text NOT NULL,
    product_id  uuid NOT NULL,
    at          timestamptz NOT NULL,
    period      date NOT NULL,
    PRIMARY KEY (order_no, kind)
);
CREATE INDEX settled_orders_v1_period ON settled_orders_v1 (period, product_id);

-- The product of every requested recharge (Recharge.Requested), for the lines that follow.
CREATE TABLE settled_order_products_v1 (
    order_no    text PRIMARY KEY,
    product_id  uuid NOT NULL
);

-- Every product's platform and wholesale cost (Product.Registered in the distribution log).
CREATE TABLE settled_products_v1 (
    product_id   uuid PRIMARY KEY,
    platform_id  uuid NOT NULL,
    amount       bigint NOT NULL,
    currency     text NOT NULL
);
CREATE INDEX settled_products_v1_platform ON settled_products_v1 (platform_id);

-- The latest event time the view has applied from each log it follows: a period is caught
-- up once the recharges log is applied well past the period's end.
CREATE TABLE settled_marks_v1 (
    application  text PRIMARY KEY,
    last_at      timestamptz NOT NULL
);

CREATE VIEW settled_orders AS SELECT * FROM settled_orders_v1;
CREATE VIEW settled_order_products AS SELECT * FROM settled_order_products_v1;
CREATE VIEW settled_products AS SELECT * FROM settled_products_v1;
CREATE VIEW settled_marks AS SELECT * FROM settled_marks_v1;
INSERT INTO projection_versions (name, live_version) VALUES ('settled_orders', 1);
