BEGIN;
CREATE TABLE pens (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL,
                   capacity int CHECK (capacity > 0));
CREATE INDEX pens_name ON pens (name);
SELECT federation.enable('pens');
COMMIT;
