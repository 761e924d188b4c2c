package dev.deskgen.example;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.cloudevents.CloudEvent;
import io.cloudevents.core.builder.CloudEventBuilder;
import io.cloudevents.core.message.Encoding;
import io.cloudevents.kafka.CloudEventDeserializer;
import io.cloudevents.kafka.CloudEventSerializer;
import io.minio.BucketExistsArgs;
import io.minio.MinioClient;
import io.minio.PutObjectArgs;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.time.Instant;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.time.temporal.ChronoUnit;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.stream.Collectors;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * A deskgen backend: for each photo, store it at {@code uploads/<job>/original.<ext>}, publish the minimal
 * upload event (job id, image key, upload time, request) as a CloudEvent in Kafka binary mode with key =
 * job id, then read each job's one terminal result from the {@code generated} topic (read_committed) and
 * print its status, reason, timeline and recommended products.
 *
 * <p>Usage: {@code java -jar target/deskgen-backend-example.jar [--concept BASIC] [--budget 250 EUR]
 * [--include "monitor,desk lamp"] [--exclude chair] [--timeout 300] PHOTO...}. {@code --budget} is the most one
 * recommended product may cost (amount, ISO 4217 currency); {@code --include}/{@code --exclude} name product
 * categories (common/schemas/product.json), comma-separated; the pipeline checks them (a bad value ends the job
 * as failed/event_invalid, a category both included and excluded as rejected/categories_conflict).
 * Settings come from the same environment variables as the services: DESKGEN_KAFKA_BOOTSTRAP_SERVERS,
 * DESKGEN_TOPIC_PREFIX, DESKGEN_S3_ENDPOINT, DESKGEN_S3_ACCESS_KEY, DESKGEN_S3_SECRET_KEY, DESKGEN_S3_BUCKET,
 * DESKGEN_S3_SECURE, DESKGEN_S3_REGION. Exit 0 when every job has its result, 1 on timeout, 2 on bad
 * settings or arguments.
 */
public final class Backend {
    private static final String UPLOADED = "com.deskgen.photo.uploaded";
    private static final String FINISHED = "com.deskgen.job.finished";
    private static final URI SOURCE = URI.create("/examples/backend-java");
    private static final Map<String, String> EXTENSIONS =
            Map.of("jpg", "jpg", "jpeg", "jpg", "png", "png", "webp", "webp");
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final SecureRandom RANDOM = new SecureRandom();

    private Backend() {
    }

    /** Thrown for a setting or argument to fix; main prints its one line and exits 2. */
    static final class UsageException extends Exception {
        private static final long serialVersionUID = 1L;

        UsageException(String message) {
            super(message);
        }
    }

    public static void main(String[] args) throws Exception {
        System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
        try {
            System.exit(run(args));
        } catch (UsageException e) {
            System.err.println("backend-java: " + e.getMessage());
            System.exit(2);
        }
    }

    static int run(String[] args) throws Exception {
        ObjectNode request = JSON.createObjectNode();
        long timeoutSeconds = 300;
        List<Path> photos = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--concept" -> request.put("concept", value(args, ++i, "--concept"));
                case "--budget" -> {
                    ObjectNode budget = request.putObject("budget");
                    budget.put("amount", number(value(args, ++i, "--budget"), "--budget"));
                    budget.put("currency", value(args, ++i, "--budget"));
                }
                case "--include", "--exclude" -> {
                    ObjectNode categories = request.has("categories")
                            ? (ObjectNode) request.get("categories") : request.putObject("categories");
                    String option = args[i];
                    ArrayNode names = categories.putArray(option.substring(2));
                    for (String name : value(args, ++i, option).split(",")) {
                        if (!name.isBlank()) {
                            names.add(name.strip());
                        }
                    }
                }
                case "--timeout" -> timeoutSeconds = Long.parseLong(value(args, ++i, "--timeout"));
                default -> photos.add(Path.of(args[i]));
            }
        }
        if (photos.isEmpty()) {
            throw new UsageException("give at least one photo: [--concept BASIC] [--budget 250 EUR] "
                    + "[--include CATEGORY,...] [--exclude CATEGORY,...] [--timeout 300] PHOTO...");
        }
        String prefix = System.getenv().getOrDefault("DESKGEN_TOPIC_PREFIX", "deskgen.");
        String bucket = System.getenv().getOrDefault("DESKGEN_S3_BUCKET", "deskgen");
        MinioClient s3 = s3Client();
        if (!s3.bucketExists(BucketExistsArgs.builder().bucket(bucket).build())) {
            throw new UsageException("bucket " + bucket + " does not exist: set DESKGEN_S3_BUCKET");
        }

        try (KafkaConsumer<String, CloudEvent> results = resultConsumer();
             KafkaProducer<String, CloudEvent> producer = producer()) {
            // Start reading results at the end of the topic as it is now: every result of the jobs below
            // is written after their upload events, so none is missed and old ones are skipped.
            String topic = prefix + "generated";
            List<TopicPartition> partitions = results.partitionsFor(topic, Duration.ofSeconds(30)).stream()
                    .map(p -> new TopicPartition(p.topic(), p.partition())).collect(Collectors.toList());
            results.assign(partitions);
            results.endOffsets(partitions, Duration.ofSeconds(30)).forEach(results::seek);

            Map<String, Path> jobs = new LinkedHashMap<>();
            for (Path photo : photos) {
                String jobId = submit(s3, producer, bucket, prefix + "uploaded", photo, request);
                jobs.put(jobId, photo);
                System.out.println("submitted job=" + jobId + " file=" + photo.getFileName());
            }
            return awaitResults(results, jobs, Duration.ofSeconds(timeoutSeconds));
        }
    }

    /** Store the photo, then publish its upload event; returns the job id. */
    static String submit(MinioClient s3, KafkaProducer<String, CloudEvent> producer, String bucket, String topic,
                         Path photo, ObjectNode request) throws Exception {
        String name = photo.getFileName().toString();
        String ext = EXTENSIONS.get(name.substring(name.lastIndexOf('.') + 1).toLowerCase(Locale.ROOT));
        if (ext == null || !Files.isRegularFile(photo)) {
            throw new UsageException(photo + ": not a .jpg, .png or .webp file");
        }
        // Job id: 1-64 letters, digits, '-' or '_', starting with a letter or digit; unique per job.
        String jobId = UUID.randomUUID().toString().replace("-", "");
        String imageKey = "uploads/" + jobId + "/original." + ext;
        byte[] bytes = Files.readAllBytes(photo);
        s3.putObject(PutObjectArgs.builder().bucket(bucket).object(imageKey).data(bytes, bytes.length)
                .contentType(ext.equals("jpg") ? "image/jpeg" : "image/" + ext).build());

        ObjectNode data = JSON.createObjectNode();
        data.put("job_id", jobId);
        data.put("image_key", imageKey);
        data.put("uploaded_at", Instant.now().truncatedTo(ChronoUnit.MILLIS).toString());
        data.set("request", request);
        CloudEvent event = CloudEventBuilder.v1()
                .withId(UUID.randomUUID().toString())
                .withSource(SOURCE)
                .withType(UPLOADED)
                .withSubject(jobId)
                .withTime(OffsetDateTime.now(ZoneOffset.UTC))
                .withDataContentType("application/json")
                .withData(JSON.writeValueAsBytes(data))
                .build();
        RecordHeaders headers = new RecordHeaders();
        headers.add("traceparent", traceparent().getBytes(StandardCharsets.US_ASCII));
        producer.send(new ProducerRecord<>(topic, null, jobId, event, headers)).get();
        return jobId;
    }

    /** Poll until every job has its result (exit code 0) or the timeout passes (1). */
    static int awaitResults(KafkaConsumer<String, CloudEvent> results, Map<String, Path> jobs, Duration timeout)
            throws Exception {
        Map<String, Path> waiting = new LinkedHashMap<>(jobs);
        Instant deadline = Instant.now().plus(timeout);
        while (!waiting.isEmpty() && Instant.now().isBefore(deadline)) {
            for (ConsumerRecord<String, CloudEvent> record : results.poll(Duration.ofMillis(500))) {
                Path photo = FINISHED.equals(record.value().getType()) ? waiting.remove(record.key()) : null;
                if (photo != null) {
                    System.out.println(describe(photo, record.value()));
                }
            }
        }
        if (!waiting.isEmpty()) {
            System.err.println("timed out waiting for " + waiting.size() + " job(s): " + waiting.keySet());
            return 1;
        }
        return 0;
    }

    /**
     * One line per result: job, file, status, reason, per-stage timeline; the output or detail below it, then the
     * recommended products (category, brand, name, price) or why there are none.
     */
    static String describe(Path photo, CloudEvent event) throws Exception {
        JsonNode result = JSON.readTree(event.getData().toBytes());
        String status = result.path("status").asText();
        List<String> stages = new ArrayList<>();
        result.path("timeline").fields().forEachRemaining(stage -> stages.add(String.format(Locale.ROOT,
                "%s %.2fs", stage.getKey(), stage.getValue().path("handle_ms").asDouble() / 1000)));
        StringBuilder line = new StringBuilder(String.format("result job=%s file=%s status=%s reason=%s",
                result.path("job_id").asText(), photo.getFileName(), status, result.path("reason").asText("-")));
        line.append(" stage=").append(result.path("stage").asText()).append(" timeline=").append(String.join(", ", stages));
        if (status.equals("succeeded")) {
            line.append("\n    output ").append(result.path("output").path("image_key").asText());
        } else {
            line.append("\n    detail ").append(result.path("detail").asText());
        }
        JsonNode captioning = result.path("captioning");
        if (captioning.has("products")) {
            List<String> products = new ArrayList<>();
            for (JsonNode product : captioning.path("products")) {
                products.add(String.format(Locale.ROOT, "%s: %s %s %s %s", product.path("category").asText(),
                        product.path("brand").asText(), product.path("name").asText(),
                        product.path("price").path("amount").asText(), product.path("price").path("currency").asText()));
            }
            line.append("\n    products ").append(products.isEmpty()
                    ? "none (" + captioning.path("products_note").asText() + ")" : String.join("; ", products));
        }
        return line.toString();
    }

    static MinioClient s3Client() throws UsageException {
        String endpoint = required("DESKGEN_S3_ENDPOINT");
        int colon = endpoint.lastIndexOf(':');
        if (colon < 0) {
            throw new UsageException("DESKGEN_S3_ENDPOINT must be host:port, not " + endpoint);
        }
        MinioClient.Builder builder = MinioClient.builder()
                .endpoint(endpoint.substring(0, colon), Integer.parseInt(endpoint.substring(colon + 1)),
                        Boolean.parseBoolean(System.getenv().getOrDefault("DESKGEN_S3_SECURE", "false")))
                .credentials(required("DESKGEN_S3_ACCESS_KEY"), required("DESKGEN_S3_SECRET_KEY"));
        String region = System.getenv("DESKGEN_S3_REGION");
        return region == null ? builder.build() : builder.region(region).build();
    }

    static KafkaProducer<String, CloudEvent> producer() throws UsageException {
        return new KafkaProducer<>(kafka(Map.of(
                ProducerConfig.ACKS_CONFIG, "all",
                ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true",
                ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class,
                ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, CloudEventSerializer.class,
                CloudEventSerializer.ENCODING_CONFIG, Encoding.BINARY)));
    }

    static KafkaConsumer<String, CloudEvent> resultConsumer() throws UsageException {
        return new KafkaConsumer<>(kafka(Map.of(
                ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed",
                ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false",
                ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class,
                ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, CloudEventDeserializer.class)));
    }

    /** Client settings: the bootstrap servers from DESKGEN_KAFKA_BOOTSTRAP_SERVERS plus {@code settings}. */
    static Properties kafka(Map<String, Object> settings) throws UsageException {
        Properties props = new Properties();
        props.put("bootstrap.servers", required("DESKGEN_KAFKA_BOOTSTRAP_SERVERS"));
        props.put("client.id", "deskgen-backend-java");
        props.putAll(settings);
        return props;
    }

    /** A fresh W3C trace context: the pipeline keeps its trace id and adds a span per stage. */
    static String traceparent() {
        byte[] trace = new byte[16];
        byte[] span = new byte[8];
        RANDOM.nextBytes(trace);
        RANDOM.nextBytes(span);
        return "00-" + HexFormat.of().formatHex(trace) + "-" + HexFormat.of().formatHex(span) + "-01";
    }

    static String required(String name) throws UsageException {
        String value = System.getenv(name);
        if (value == null || value.isBlank()) {
            throw new UsageException("set " + name);
        }
        return value;
    }

    static double number(String text, String option) throws UsageException {
        try {
            return Double.parseDouble(text);
        } catch (NumberFormatException e) {
            throw new UsageException(option + ": " + text + " is not a number");
        }
    }

    static String value(String[] args, int index, String option) throws UsageException {
        if (index >= args.length) {
            throw new UsageException(option + " needs a value");
        }
        return args[index];
    }
}
