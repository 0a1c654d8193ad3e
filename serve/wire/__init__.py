"""OpenAI's wire format: request bodies checked field by field into typed requests, the chat
transcript, and the response objects (whole and streamed) built from the engine's events."""
