//! ehrQL: dataset definitions to queries. (Being built.)
