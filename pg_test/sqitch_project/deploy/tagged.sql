BEGIN;
ALTER TABLE herd ADD COLUMN tagged_at timestamptz NOT NULL DEFAULT now();
COMMIT;
