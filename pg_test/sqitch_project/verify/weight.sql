SELECT weight_kg FROM herd WHERE false;
