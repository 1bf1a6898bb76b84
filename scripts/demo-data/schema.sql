-- Demo keyspace: a small shop. Loaded into each shard's backing database.
SET SESSION time_zone = '+00:00';
CREATE TABLE customers (
  id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  name VARCHAR(64) NOT NULL,
  email VARCHAR(128),
  vip TINYINT(1) NOT NULL DEFAULT 0,
  tier TINYINT UNSIGNED,
  balance DECIMAL(12,2),
  created_at DATETIME(6),
  code BINARY(4),
  token VARBINARY(16)
) DEFAULT CHARSET=utf8mb4;
CREATE TABLE products (
  id INT NOT NULL PRIMARY KEY,
  sku CHAR(8) NOT NULL,
  title VARCHAR(100),
  price DECIMAL(10,2),
  weight FLOAT,
  rating DOUBLE,
  size ENUM('S','M','L','XL'),
  tags SET('new','sale','eco','gift'),
  attrs JSON,
  image BLOB,
  stock MEDIUMINT,
  discontinued BIT(1)
) DEFAULT CHARSET=utf8mb4;
CREATE TABLE orders (
  id BIGINT NOT NULL PRIMARY KEY,
  customer_id BIGINT UNSIGNED NOT NULL,
  product_id INT NOT NULL,
  qty SMALLINT UNSIGNED NOT NULL,
  placed_at TIMESTAMP(3) NULL,
  ship_date DATE,
  delivery_window TIME,
  year_placed YEAR,
  flags BIT(8),
  notes TEXT,
  pickup POINT
) DEFAULT CHARSET=utf8mb4;
