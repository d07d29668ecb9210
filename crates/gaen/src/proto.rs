//! Wire structs for `../shared/proto/export.proto`, derived by hand with prost.
//!
//! proto2 `optional` fields are `Option` so presence survives a decode/encode round trip.
//! Nothing outside this crate sees these types: `export` turns them into domain values.

#[derive(Clone, PartialEq, prost::Message)]
pub struct TemporaryExposureKeyExport {
    #[prost(fixed64, optional, tag = "1")]
    pub start_timestamp: Option<u64>,
    #[prost(fixed64, optional, tag = "2")]
    pub end_timestamp: Option<u64>,
    #[prost(string, optional, tag = "3")]
    pub region: Option<String>,
    #[prost(int32, optional, tag = "4")]
    pub batch_num: Option<i32>,
    #[prost(int32, optional, tag = "5")]
    pub batch_size: Option<i32>,
    #[prost(message, repeated, tag = "6")]
    pub signature_infos: Vec<SignatureInfo>,
    #[prost(message, repeated, tag = "7")]
    pub keys: Vec<TemporaryExposureKey>,
    #[prost(message, repeated, tag = "8")]
    pub revised_keys: Vec<TemporaryExposureKey>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SignatureInfo {
    #[prost(string, optional, tag = "1")]
    pub app_bundle_id: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub android_package: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub verification_key_version: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub verification_key_id: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub signature_algorithm: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TemporaryExposureKey {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub key_data: Option<Vec<u8>>,
    #[prost(int32, optional, tag = "2")]
    pub transmission_risk_level: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    pub rolling_start_interval_number: Option<i32>,
    #[prost(int32, optional, tag = "4")]
    pub rolling_period: Option<i32>,
    #[prost(int32, optional, tag = "5")]
    pub report_type: Option<i32>,
    #[prost(sint32, optional, tag = "6")]
    pub days_since_onset_of_symptoms: Option<i32>,
    #[prost(int32, optional, tag = "8")]
    pub variant_of_concern: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TekSignatureList {
    #[prost(message, repeated, tag = "1")]
    pub signatures: Vec<TekSignature>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TekSignature {
    #[prost(message, optional, tag = "1")]
    pub signature_info: Option<SignatureInfo>,
    #[prost(int32, optional, tag = "2")]
    pub batch_num: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    pub batch_size: Option<i32>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub signature: Option<Vec<u8>>,
}
