//! The OpenAPI document of `/openai/v1`, generated from the handlers'
//! annotations like `/v1`'s and merged into `GET /v1/openapi.json`.

use utoipa::OpenApi;

use super::batches::{self, BatchErrors, BatchList, BatchObject, CreateBatch, RequestCounts};
use super::error::{OpenAiErrorBody, OpenAiErrorDetail};
use super::files::{self, FileDeleted, FileList, FileObject};
use super::output::{
    ChatCompletionObject, Choice, ChoiceMessage, CompletionUsage, LineFailure, LineResponse,
    OutputLine,
};
use ferry_common::batch::openai::BatchError;

#[derive(OpenApi)]
#[openapi(
    paths(
        files::upload,
        files::list,
        files::get_file,
        files::content,
        files::delete,
        batches::create,
        batches::list,
        batches::get_batch,
        batches::cancel,
    ),
    components(schemas(
        FileObject, FileDeleted, FileList, CreateBatch, BatchObject, BatchErrors, BatchError,
        RequestCounts, BatchList, OutputLine, LineResponse, LineFailure, ChatCompletionObject,
        Choice, ChoiceMessage, CompletionUsage, OpenAiErrorBody, OpenAiErrorDetail
    )),
    tags((name = "openai", description = "OpenAI's Batch API (files and batches) on Ferry's batches: point an official client's base_url at /openai/v1"))
)]
pub struct OpenAiDoc;
