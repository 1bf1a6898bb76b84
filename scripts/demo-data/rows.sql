-- Rows for one shard: @lo..@hi are set by the caller. Deterministic.
SET SESSION time_zone = '+00:00';
INSERT INTO customers
SELECT seq, CONCAT('Customer ', seq), CONCAT('c', seq, '@example.com'), seq % 7 = 0, seq % 4,
       ROUND(seq * 13.37 % 5000, 2), TIMESTAMP('2024-01-01') + INTERVAL seq * 3607 SECOND + INTERVAL seq MICROSECOND,
       UNHEX(LPAD(HEX(seq), 8, '0')), UNHEX(MD5(seq))
FROM seq_1_to_1000 WHERE seq BETWEEN @lo AND @hi;
INSERT INTO products
SELECT seq, CONCAT('SKU', LPAD(seq, 5, '0')), CONCAT('Product ', seq), ROUND(seq * 1.99, 2), seq / 8, seq / 3,
       ELT(1 + seq % 4, 'S', 'M', 'L', 'XL'), IF(seq % 3 = 0, 'new,eco', 'sale'),
       JSON_OBJECT('color', ELT(1 + seq % 3, 'red', 'green', 'blue'), 'dims', JSON_ARRAY(seq, seq * 2)),
       UNHEX(SHA1(seq)), CAST(seq AS SIGNED) * 10 - 500, seq % 10 = 0
FROM seq_1_to_200 WHERE seq BETWEEN @lo / 5 AND @hi / 5;
INSERT INTO orders
SELECT seq, 1 + seq % 1000, 1 + seq % 200, 1 + seq % 5, TIMESTAMP('2024-03-01') + INTERVAL seq * 61 SECOND + INTERVAL (seq % 1000) * 1000 MICROSECOND,
       IF(seq % 11 = 0, '0000-00-00', DATE('2024-03-05') + INTERVAL seq % 30 DAY), SEC_TO_TIME(seq % 86400), 2024, seq % 256,
       IF(seq % 5 = 0, NULL, CONCAT('note ', seq)), POINT(seq / 100, seq / 200)
FROM seq_1_to_5000 WHERE seq BETWEEN @lo * 5 AND @hi * 5 + 4;
