//! `Duration` as fractional seconds in JSON (`12.345`), the unit people read.

use std::time::Duration;

use serde::Serializer;

pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(value.as_secs_f64())
}
