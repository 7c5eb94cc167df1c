SELECT tagged_at FROM herd WHERE false;
