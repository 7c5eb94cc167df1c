//! What to start: a node's name, how it learns it, extra settings, and where it lives.

/// How a node learns its name.
#[derive(Debug, Clone)]
pub enum Identity {
    /// `federation.node_name = '<name>'` in postgresql.conf.
    Guc(String),
    /// A Kubernetes downward-API labels file holding `<label>="<name>"`, at
    /// `federation.labels_path`; `federation.node_label` names the label.
    LabelsFile { label: String, value: String },
    /// Nothing configured: `federation.node_name()` must fail.
    Unconfigured,
}

/// What to start.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// The harness's name for the node (its directory and log lines); usually the node name.
    pub name: String,
    pub identity: Identity,
    /// Extra postgresql.conf lines.
    pub conf: Vec<String>,
    /// Run `CREATE EXTENSION pg_federation` once started.
    pub create_extension: bool,
    /// Run inside a network namespace of a [`Net`], at this address (None: 127.0.0.1).
    pub place: Option<NetPlace>,
    /// The PostgreSQL installation's bin directory (None: the one PG_CONFIG names).
    pub bindir: Option<std::path::PathBuf>,
}

/// Where a node lives on a [`Net`]: its namespace and address.
#[derive(Debug, Clone)]
pub struct NetPlace {
    pub netns: String,
    pub host: String,
}

impl NodeSpec {
    /// A node named by the GUC, with the extension created.
    pub fn guc(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            identity: Identity::Guc(name.into()),
            conf: vec![],
            create_extension: true,
            place: None,
            bindir: None,
        }
    }

    /// A node named by a labels file under the default label `pg-cluster`.
    pub fn labels(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            identity: Identity::LabelsFile {
                label: "pg-cluster".into(),
                value: name.into(),
            },
            conf: vec![],
            create_extension: true,
            place: None,
            bindir: None,
        }
    }

    pub fn with_conf(mut self, line: &str) -> NodeSpec {
        self.conf.push(line.to_string());
        self
    }

    /// A node of another PostgreSQL installation than PG_CONFIG's (a mixed-major federation).
    pub fn with_bindir(mut self, bindir: &std::path::Path) -> NodeSpec {
        self.bindir = Some(bindir.to_path_buf());
        self
    }

    pub fn without_extension(mut self) -> NodeSpec {
        self.create_extension = false;
        self
    }
}
