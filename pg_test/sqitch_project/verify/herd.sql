SELECT 1 / count(*) FROM federation.federated_table WHERE relid = 'herd'::regclass;
