BEGIN;
ALTER TABLE herd ADD COLUMN weight_kg numeric;
CREATE INDEX herd_weight ON herd (weight_kg);
COMMIT;
