//! Pull Secret names and ServiceAccount pull-secret ordering.
