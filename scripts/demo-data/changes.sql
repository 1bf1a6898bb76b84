-- Changes applied to the shard -80 after the first sync.
SET SESSION time_zone = '+00:00';
INSERT INTO customers (id, name, email, vip, balance, created_at) VALUES (5001, 'Newcomer', 'new@example.com', 1, 0.50, NOW(6));
UPDATE customers SET balance = balance + 100, vip = 1 WHERE id IN (2, 3);
DELETE FROM orders WHERE id IN (10, 11, 12);
START TRANSACTION;
INSERT INTO orders (id, customer_id, product_id, qty, placed_at) VALUES (90001, 5001, 1, 2, NOW(3));
UPDATE products SET price = .99, tags = 'sale,gift' WHERE id = 1;
COMMIT;
