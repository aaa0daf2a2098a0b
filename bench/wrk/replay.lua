-- Replays pre-generated raw HTTP requests, each one once, in order (bench/common.py writes them).
--
-- The file named by FI_WRK_REQUESTS holds, for each request, its length in bytes on a line of
-- its own and then the raw request (request line, headers, body). With several wrk threads
-- (FI_WRK_THREADS, the same as -t) thread k takes requests k, k+T, k+2T, ...: each its own
-- slice, none sent twice. A thread that runs out starts its slice again and counts it
-- ("reused"): the harness reports that, since a repeated request is no longer a new complaint.
--
-- done() prints one line "FIWRK {json}" with the summary, every thread's counts and wrk's
-- latency histogram (microseconds: [value, count] pairs) so that slices can be merged.

local threads = {}
local counter = 0

function setup(thread)
   thread:set("thread_index", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

function init(args)
   local path = os.getenv("FI_WRK_REQUESTS")
   local nthreads = tonumber(os.getenv("FI_WRK_THREADS") or "1")
   local file = assert(io.open(path, "rb"))
   local data = file:read("*a")
   file:close()
   pool = {}
   local pos, index = 1, 0
   while pos <= #data do
      local newline = string.find(data, "\n", pos, true)
      local length = tonumber(string.sub(data, pos, newline - 1))
      if index % nthreads == thread_index then
         pool[#pool + 1] = string.sub(data, newline + 1, newline + length)
      end
      index = index + 1
      pos = newline + 1 + length
   end
   data = nil
   pool_size = #pool
   sent = 0
   cursor = 0
end

function request()
   sent = sent + 1
   cursor = cursor + 1
   if cursor > pool_size then
      cursor = 1
   end
   return pool[cursor]
end

done = function(summary, latency, requests)
   local sent_total, pool_total, reused = 0, 0, 0
   for _, thread in ipairs(threads) do
      local s, p = thread:get("sent"), thread:get("pool_size")
      sent_total = sent_total + s
      pool_total = pool_total + p
      if s > p then
         reused = reused + (s - p)
      end
   end
   local pairs_out = {}
   for i = 1, #latency do
      local value, count = latency(i)
      pairs_out[#pairs_out + 1] = string.format("[%d,%d]", value, count)
   end
   local e = summary.errors
   io.write(string.format(
      'FIWRK {"requests":%d,"duration_us":%d,"bytes":%d,"errors":{"connect":%d,"read":%d,"write":%d,' ..
      '"status":%d,"timeout":%d},"sent":%d,"pool":%d,"reused":%d,"hist":[%s]}\n',
      summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
      sent_total, pool_total, reused, table.concat(pairs_out, ",")))
end
