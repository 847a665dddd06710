// Stored responses for `previous_response_id` on /v1/responses (interface.md §8 item 15).
//
// OpenAI stores responses by default (`store: true`) so a client can continue a
// conversation by id instead of replaying it. This server keeps them in memory only: a
// bounded LRU of the conversation items each response ended with (its effective input
// items, the previous ones first, then its output items), so a follow-up request's input
// is appended to them. `instructions` are not carried over, as in OpenAI's API. Nothing
// survives a restart: an unknown id is a 404 naming it.
//
// Thread-safe (HTTP threads store and read).
#pragma once

#include <cstdint>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include <nlohmann/json.hpp>

namespace ds4::server {

struct ResponseStoreLimits {
    std::size_t max_responses = 1024;
    uint64_t max_bytes = uint64_t{256} << 20;  // of the items' JSON text
};

class ResponseStore {
public:
    using Json = nlohmann::ordered_json;
    explicit ResponseStore(ResponseStoreLimits limits = {});

    // `items`: a JSON array of Responses input items (the whole conversation so far).
    void put(const std::string& id, Json items);
    // The items stored under id (touching it), or nullopt.
    std::optional<Json> get(const std::string& id);
    std::size_t size() const;

private:
    struct Entry {
        Json items;
        uint64_t bytes = 0;
        std::list<std::string>::iterator lru;
    };
    ResponseStoreLimits limits_;
    mutable std::mutex mu_;
    std::list<std::string> lru_;  // most recent first
    std::unordered_map<std::string, Entry> entries_;
    uint64_t bytes_ = 0;
};

}  // namespace ds4::server
