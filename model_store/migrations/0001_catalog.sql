-- The catalog of a database-backed model store (model_store/catalog_store.py): every model, version and alias
-- as rows; the versions' files are immutable objects named by their sha256, in the store's Blobs.

-- One row per model ever saved: `next_version` only grows, so a deleted version's number is never reused.
-- Allocating it is an UPDATE of this row, which concurrent saves of one model take in turn.
CREATE TABLE catalog_models (
    name text PRIMARY KEY,
    next_version integer NOT NULL CHECK (next_version >= 1)
);

-- A published version. `manifest` is the exact manifest.json (readers get the bytes that were written).
-- The row is the publish: it is inserted in the transaction that commits the version, after its objects exist.
CREATE TABLE catalog_versions (
    model text NOT NULL REFERENCES catalog_models (name),
    version integer NOT NULL CHECK (version >= 1),
    manifest text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model, version)
);

-- The files of a version (all but manifest.json) and the object each is: key sha256/<sha256>.
CREATE TABLE catalog_files (
    model text NOT NULL,
    version integer NOT NULL,
    filename text NOT NULL,
    sha256 text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size bigint NOT NULL CHECK (size >= 0),
    PRIMARY KEY (model, version, filename),
    FOREIGN KEY (model, version) REFERENCES catalog_versions (model, version) ON DELETE CASCADE
);

-- No cascade: a version an alias points at cannot be deleted, here as in the folder store.
CREATE TABLE catalog_aliases (
    model text NOT NULL,
    alias text NOT NULL,
    version integer NOT NULL,
    PRIMARY KEY (model, alias),
    FOREIGN KEY (model, version) REFERENCES catalog_versions (model, version)
);
