SELECT 1 / count(*) FROM federation.federated_table WHERE relid = 'pens'::regclass;
