//! Tests of the pure PagerDuty mapping, on fixtures in the shape of PagerDuty v3 examples.
